"""Sans-IO message framers for TCP protocols, bounded by ``package_max_length``.

``feed(data)`` returns the complete messages found so far and keeps the rest.  A message that
would exceed the limit raises :class:`~tx_swoole.errors.FrameTooLargeError` before its bytes are
kept: a length prefix is refused from the header alone, an EOF buffer when it reaches the limit.
No Twisted import here.
"""

from __future__ import annotations

import struct

from tx_swoole.errors import FrameTooLargeError, FramingError
from tx_swoole.settings import Settings

# Swoole's package_length_type letters (PHP pack() codes) as struct formats.
_LENGTH_FORMATS = {
    "c": "b", "C": "B",
    "s": "=h", "S": "=H", "n": ">H", "v": "<H",
    "l": "=i", "L": "=I", "N": ">I", "V": "<I",
    "q": "=q", "Q": "=Q", "J": ">Q", "P": "<Q",
}  # fmt: skip


class RawFramer:
    """No framing: every chunk received is a message."""

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        return [data]


class EOFFramer:
    """Messages end with ``eof`` (Swoole ``open_eof_split``); messages include the ``eof``."""

    __slots__ = ("_eof", "_limit", "_buf")

    def __init__(self, eof: bytes, limit: int) -> None:
        self._eof = eof
        self._limit = limit
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        eof, n = self._eof, len(self._eof)
        out = []
        start = 0
        while True:
            end = buf.find(eof, start)
            if end < 0:
                break
            if end + n - start > self._limit:
                raise FrameTooLargeError(end + n - start, self._limit, "message")
            out.append(buf[start : end + n])
            start = end + n
        rest = buf[start:]
        if len(rest) >= self._limit:
            self._buf = b""
            raise FrameTooLargeError(len(rest), self._limit, "unterminated message")
        self._buf = rest
        return out


class LengthFramer:
    """Length-prefixed messages (Swoole ``open_length_check``).

    A message is ``body_offset + length`` bytes, where ``length`` is read at ``length_offset``
    with ``length_type``; messages are delivered whole, header included, as Swoole does.
    """

    __slots__ = ("_struct", "_loff", "_boff", "_need", "_limit", "_buf")

    def __init__(self, length_type: str, length_offset: int, body_offset: int, limit: int) -> None:
        self._struct = struct.Struct(_LENGTH_FORMATS[length_type])
        self._loff = length_offset
        self._boff = body_offset
        self._need = length_offset + self._struct.size
        self._limit = limit
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out = []
        start = 0
        size = len(buf)
        while size - start >= self._need:
            (length,) = self._struct.unpack_from(buf, start + self._loff)
            total = self._boff + length
            if length < 0 or total < self._need:
                self._buf = b""
                raise FramingError(f"invalid length {length} in message header")
            if total > self._limit:
                self._buf = b""
                raise FrameTooLargeError(total, self._limit, "declared message")
            if size - start < total:
                break
            out.append(buf[start : start + total])
            start += total
        self._buf = buf[start:] if start < size else b""
        return out

    @staticmethod
    def pack(length_type: str, body: bytes) -> bytes:
        """``body`` with a length header of ``length_type`` (for the usual body_offset = size)."""
        return struct.pack(_LENGTH_FORMATS[length_type], len(body)) + body


def make_framer(settings: Settings) -> RawFramer | EOFFramer | LengthFramer:
    """The framer the settings ask for (raw when neither framing option is on)."""
    if settings.open_eof_split:
        return EOFFramer(settings.package_eof.encode("latin-1"), settings.package_max_length)
    if settings.open_length_check:
        return LengthFramer(
            settings.package_length_type,
            settings.package_length_offset,
            settings.package_body_offset,
            settings.package_max_length,
        )
    return RawFramer()
