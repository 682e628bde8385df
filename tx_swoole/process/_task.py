"""Sans-IO frames between workers and task workers.

A frame is a 17-byte head (``!IBQi``: the length of what follows the length field, a kind, a
task id, and a number whose meaning depends on the kind) and a payload.

Caller → task worker: :data:`TASK` (the number is the source worker id, the payload the
pickled data), :data:`BYE` (no more tasks on this connection: the answer to ``DRAINING``).
Task worker → caller: :data:`RESULT` (the pickled value), :data:`ERROR` (the payload is
``kind\\0type\\0message`` in UTF-8, ``kind`` being ``raised`` or ``serialize``),
:data:`REQUEUE` (a queued task handed back unrun by a draining task worker), :data:`DRAINING`.
In ``RESULT`` and ``ERROR`` the number is the task worker's load (tasks it holds, running and
queued), for the callers' choice of the least busy.

Pickle is the serialiser (as ``multiprocessing`` and ``concurrent.futures`` use: the processes
of one server trust each other); a value is pickled on its own, so one that cannot be
unpickled fails its task only.  Resource handling: a payload over ``max_length``
(``package_max_length``) is refused when packed and, from the head alone, when read.  No
Twisted import here.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, NamedTuple

from tx_swoole.errors import FrameTooLargeError, TaskSerializationError

__all__ = [
    "ADOPTED",
    "BYE",
    "HANDOFF",
    "CALL",
    "CLOSED",
    "HELLO",
    "OPENED",
    "PIPE",
    "DRAINING",
    "ERROR",
    "REQUEUE",
    "RESULT",
    "TASK",
    "Frame",
    "FrameReader",
    "dumps",
    "error_payload",
    "frame",
    "loads",
    "parse_error",
]

TASK, RESULT, ERROR, REQUEUE, DRAINING, BYE = 1, 2, 3, 4, 5, 6
# Between any two processes of a server (:mod:`tx_swoole.process.messages`): HELLO (the number
# is the sender's pid, the payload its pickled (kind, id)), PIPE (sendMessage: the number is
# the source worker id), CALL (a connection-table call on the receiver: the number says which),
# OPENED and CLOSED (the sender's connections, for the receiver's copy of the table).
HELLO, PIPE, CALL, OPENED, CLOSED = 7, 8, 9, 10, 11
# A connection handed from a draining worker to its replacement: HANDOFF (the task id is the
# connection id, the payload its pickled state; its socket travels beside it as SCM_RIGHTS),
# and ADOPTED, the answer (the number: 1 taken, 0 not).
HANDOFF, ADOPTED = 12, 13
_HEAD = struct.Struct("!IBQi")
HEAD_SIZE = _HEAD.size
_REST = HEAD_SIZE - 4  # of the head, what the length counts


class Frame(NamedTuple):
    kind: int
    taskId: int  # noqa: N815 - the name Swoole's API gives it
    number: int  # source worker id (TASK) or the task worker's load (RESULT, ERROR)
    payload: bytes


def dumps(value: Any, max_length: int, what: str) -> bytes:
    """``value`` pickled; :class:`TaskSerializationError` when pickle refuses it or it is over
    ``max_length`` bytes (``what`` names it in the message)."""
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # PicklingError, TypeError, AttributeError, RecursionError...
        raise TaskSerializationError(
            f"{what} cannot be serialised with pickle: {type(e).__name__}: {e}"
        ) from None
    if len(data) > max_length:
        raise TaskSerializationError(
            f"{what} pickles to {len(data)} bytes, over package_max_length={max_length}; "
            "raise package_max_length or pass a reference (a path, a key) instead"
        )
    return data


def loads(payload: bytes, what: str) -> Any:
    """Unpickle ``payload``; :class:`TaskSerializationError` (saying why) when it cannot be."""
    try:
        return pickle.loads(payload)
    except Exception as e:  # a class this process cannot import, for one
        raise TaskSerializationError(
            f"{what} cannot be unpickled here: {type(e).__name__}: {e}"
        ) from None


def frame(kind: int, task_id: int = 0, number: int = 0, payload: bytes = b"") -> bytes:
    return _HEAD.pack(_REST + len(payload), kind, task_id, number) + payload


def error_payload(kind: str, type_name: str, message: str) -> bytes:
    return f"{kind}\0{type_name}\0{message}".encode("utf-8", "replace")


def parse_error(payload: bytes) -> tuple[str, str, str]:
    """``(kind, type name, message)`` of an ERROR frame's payload."""
    kind, _, rest = payload.decode("utf-8", "replace").partition("\0")
    type_name, _, message = rest.partition("\0")
    return kind, type_name, message


class FrameReader:
    """Bytes in, frames out.  A head announcing more than ``max_length`` bytes of payload
    raises :class:`~tx_swoole.errors.FrameTooLargeError` before the payload is buffered."""

    __slots__ = ("maxLength", "_buf")

    def __init__(self, max_length: int) -> None:
        self.maxLength = max_length
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        out: list[Frame] = []
        pos, end = 0, len(view)
        unpack = _HEAD.unpack_from
        while end - pos >= HEAD_SIZE:
            length, kind, task_id, number = unpack(view, pos)
            size = length - _REST
            if size < 0 or size > self.maxLength:
                raise FrameTooLargeError(max(size, 0), self.maxLength, "task frame payload")
            start = pos + HEAD_SIZE
            if end - start < size:
                break
            out.append(Frame(kind, task_id, number, bytes(view[start : start + size])))
            pos = start + size
        if view is buf:
            del buf[:pos]
        elif pos < end:
            buf += view[pos:]
        return out
