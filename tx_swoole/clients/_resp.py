"""Sans-IO RESP codec over hiredis: ``pack`` commands, ``feed`` bytes, collect replies.

Error replies (``-ERR ...``) come back as :class:`~tx_swoole.errors.RedisReplyError`
instances in the reply list, not raised, so each reaches its own caller.  Bytes that are not
RESP raise :class:`~tx_swoole.errors.RedisProtocolError`, and so does a partial reply that
grows past ``max_buffer`` (Redis's own ``proto-max-bulk-len`` is 512 MiB).  No Twisted import.
"""

from __future__ import annotations

from typing import Any

import hiredis

from tx_swoole.errors import RedisProtocolError, RedisReplyError

MAX_BUFFER = 512 * 1024 * 1024 + 1024 * 1024  # a 512 MiB bulk string plus framing
pack_command = hiredis.pack_command


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """Several commands in one buffer (a pipeline)."""
    return b"".join([pack_command(c) for c in commands])


class RespReader:
    """Parses replies; ``encoding`` decodes bulk strings (``None``: bytes)."""

    __slots__ = ("_reader", "_max")

    def __init__(self, encoding: str | None = None, max_buffer: int = MAX_BUFFER) -> None:
        kwargs: dict[str, Any] = {
            "protocolError": RedisProtocolError,
            "replyError": RedisReplyError,
            "notEnoughData": False,
        }
        if encoding:
            kwargs["encoding"] = encoding
        self._reader = hiredis.Reader(**kwargs)
        self._max = max_buffer

    def feed(self, data: bytes) -> list[Any]:
        """Return every reply completed by ``data`` (errors as exception instances).

        Raises :class:`RedisProtocolError` for bytes that are not RESP or an oversized reply.
        """
        reader = self._reader
        reader.feed(data)
        out = []
        get = reader.gets
        reply = get()
        while reply is not False:
            out.append(reply)
            reply = get()
        if reader.len() > self._max:
            raise RedisProtocolError(
                f"a partial reply passed {self._max} buffered bytes; refusing to buffer more"
            )
        return out
