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

    def pending(self) -> bytes:
        """The bytes of a message not yet whole (none, unframed)."""
        return b""


class EOFFramer:
    """Messages end with ``eof`` (Swoole ``open_eof_split``); messages include the ``eof``.

    Linear in the bytes received, whatever the read sizes: a read that ends no message is
    kept as a part and only it (plus the ``len(eof) - 1`` bytes before it) is searched; the
    parts are joined once, when the message they belong to ends.
    """

    __slots__ = ("_eof", "_limit", "_parts", "_size", "_tail")

    def __init__(self, eof: bytes, limit: int) -> None:
        self._eof = eof
        self._limit = limit
        self._parts: list[bytes] = []  # an unterminated message, as received
        self._size = 0
        self._tail = b""  # its last len(eof) - 1 bytes: an eof may straddle two reads

    def feed(self, data: bytes) -> list[bytes]:
        eof = self._eof
        if self._parts:
            probe = self._tail + data
            if probe.find(eof) < 0:  # still no end: keep the part, search nothing twice
                self._keep(data, probe)
                return []
            buf = b"".join(self._parts) + data
            self._parts = []
            self._size = 0
        else:
            buf = data
        n = len(eof)
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
        if start < len(buf):
            rest = buf[start:]
            self._keep(rest, rest)
        return out

    def pending(self) -> bytes:
        """The bytes of a message not yet whole: fed to a new framer, they put it where this
        one is (a connection handed to another worker)."""
        return b"".join(self._parts)

    def _keep(self, part: bytes, probe: bytes) -> None:
        self._size += len(part)
        if self._size >= self._limit:
            size = self._size
            self._parts, self._size, self._tail = [], 0, b""
            raise FrameTooLargeError(size, self._limit, "unterminated message")
        self._parts.append(part)
        keep = len(self._eof) - 1
        self._tail = probe[-keep:] if keep else b""


class LengthFramer:
    """Length-prefixed messages (Swoole ``open_length_check``).

    A message is ``body_offset + length`` bytes, where ``length`` is read at ``length_offset``
    with ``length_type``; messages are delivered whole, header included, as Swoole does.
    Linear in the bytes received: reads that do not complete what is wanted (the header, then
    the whole message) are kept as parts and joined once.
    """

    __slots__ = ("_struct", "_loff", "_boff", "_need", "_limit", "_parts", "_size", "_want")

    def __init__(self, length_type: str, length_offset: int, body_offset: int, limit: int) -> None:
        self._struct = struct.Struct(_LENGTH_FORMATS[length_type])
        self._loff = length_offset
        self._boff = body_offset
        self._need = length_offset + self._struct.size
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._want = 0  # bytes needed before the parts are worth joining

    def feed(self, data: bytes) -> list[bytes]:
        if self._parts:
            self._parts.append(data)
            self._size += len(data)
            if self._size < self._want:
                return []
            buf = b"".join(self._parts)
            self._parts = []
            self._size = 0
        else:
            buf = data
        out = []
        start = 0
        size = len(buf)
        want = self._need
        while size - start >= self._need:
            (length,) = self._struct.unpack_from(buf, start + self._loff)
            total = self._boff + length
            if length < 0 or total < self._need:
                raise FramingError(f"invalid length {length} in message header")
            if total > self._limit:
                raise FrameTooLargeError(total, self._limit, "declared message")
            if size - start < total:
                want = total
                break
            out.append(buf[start : start + total])
            start += total
            want = self._need
        if start < size:
            self._parts = [buf[start:] if start else buf]
            self._size = size - start
            self._want = want
        return out

    def pending(self) -> bytes:
        """The bytes of a message not yet whole (see :meth:`EOFFramer.pending`)."""
        return b"".join(self._parts)

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
