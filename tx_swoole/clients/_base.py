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
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IReactorUNIX, IStreamClientEndpoint

from tx_swoole.transport import own_hot_attributes, write_through

__all__ = ["GENERATION", "advice", "client_endpoint", "connect_failure", "fast_write"]
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


def client_endpoint(reactor: Any, host: str, port: int, unix_socket: str | None, tls: Any,
                    timeout: float) -> IStreamClientEndpoint:  # fmt: skip
    """The endpoint a client connects with: a Unix socket path, or host:port (with TLS from the
    first byte when ``tls`` is given); ``timeout`` 0 is Twisted's 30 s.  The reactor must
    provide ``IReactorTCP`` / ``IReactorUNIX``."""
    timeout = timeout or 30.0
    if unix_socket:
        return UNIXClientEndpoint(IReactorUNIX(reactor), unix_socket, timeout=timeout)
    endpoint = TCP4ClientEndpoint(IReactorTCP(reactor), host, port, timeout=timeout)
    return wrapClientTLS(tls, endpoint) if tls is not None else endpoint


def fast_write(transport: Any) -> Callable[[bytes], None]:
    """The write a client connection uses: on plain TCP, send at once when nothing is buffered
    (write-through); with TLS or another transport, Twisted's ``write``."""
    if isinstance(transport, tcp.Connection) and not transport.TLS:
        own_hot_attributes(transport)
        return partial(write_through, transport)
    return transport.write  # type: ignore[no-any-return]
