"""What every client shares: the process a client belongs to, and what a failed connect means.

A connection cannot be shared by two processes (their bytes would interleave on one socket);
the clients refuse use after a fork (``GENERATION`` changed) with :func:`advice`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import defer, error, tcp

from tx_swoole.transport import own_hot_attributes, write_through

__all__ = ["GENERATION", "advice", "connect_failure", "fast_write"]
GENERATION = 0  # read it as _base.GENERATION (a module attribute: it changes after a fork)


def _forked() -> None:
    global GENERATION
    GENERATION += 1


os.register_at_fork(after_in_child=_forked)


def advice(kind: str, address: str, pid: int) -> str:
    """The error message for a ``kind`` to ``address`` created in ``pid`` and used here."""
    return (
        f"this {kind} for {address} was created in process {pid} and used in {os.getpid()}: "
        "connections cannot be shared across processes; create clients in each worker's "
        "worker_start hook"
    )


def connect_failure(e: BaseException, address: str, timeout: float) -> tuple[bool, str]:
    """``(timed_out, message)`` for a failed connect to ``address``: what to check."""
    if isinstance(e, error.TimeoutError | defer.CancelledError | TimeoutError):
        return True, f"connect to {address} timed out after {timeout}s"
    if isinstance(e, error.ConnectionRefusedError | ConnectionRefusedError):
        return False, f"connection refused: nothing listens on {address}"
    if isinstance(e, error.ConnectError) and "No such file" in str(e):
        return False, f"nothing listens on {address}: no such socket file"
    return False, f"cannot connect to {address}: {e}"


def fast_write(transport: Any) -> Callable[[bytes], None]:
    """The write a client connection uses: on plain TCP, send at once when nothing is buffered
    (write-through); with TLS or another transport, Twisted's ``write``."""
    if isinstance(transport, tcp.Connection) and not transport.TLS:
        own_hot_attributes(transport)
        return partial(write_through, transport)
    return transport.write  # type: ignore[no-any-return]
