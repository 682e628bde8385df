"""WebSocket (RFC 6455, permessage-deflate of RFC 7692) as a sans-IO state machine.

:class:`WebSocketConnection` takes bytes and returns events; the writer side takes messages
and returns bytes.  No Twisted import, no clock: the glue (:mod:`tx_swoole.protocols.websocket`)
owns the transport and the timers.

Events from :meth:`WebSocketConnection.receive`, in order:

- a ``str`` (a whole text message) or ``bytes`` (a whole binary message);
- :class:`Ping` / :class:`Pong` (control frames; a ping is answered for you, a :class:`Send`
  with the pong following it, unless ``auto_pong`` is False);
- :class:`CloseFrame` (with ``close_frames``: the peer's close frame, before the reply to it);
- :class:`Send`: bytes to write now (a pong, the reply to a close, the close that fails the
  connection);
- :class:`Closed`: the connection is closed for WebSocket (the close handshake completed, or the
  peer broke the protocol and was sent the close code that says so).  After it nothing more is
  read; a server then closes the TCP connection.

Error handling: nothing the peer sends raises; every violation becomes a close with its code
(1002 framing, 1007 bad UTF-8, 1009 too big) and a reason naming the rule.  Resource handling:
a message (after inflation) over ``max_message`` bytes is refused from the frame header (or the
inflater's output) before it is buffered; the buffer holds at most one frame, so
``max_message`` plus a header.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import os
import zlib
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = [
    "CLOSED",
    "CLOSING",
    "OPEN",
    "CloseFrame",
    "Closed",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "Send",
    "State",
    "WebSocketConnection",
    "accept_key",
    "apply_mask",
    "valid_close_code",
]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA = 1000, 1001, 1002, 1003
NO_STATUS, ABNORMAL, INVALID_DATA, POLICY, TOO_BIG, INTERNAL = 1005, 1006, 1007, 1008, 1009, 1011
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_from_bytes = int.from_bytes
_NO_PARTS: list[Any] = []  # shared, never appended to (a fragmented message gets its own)


class State(Enum):
    """Where the connection is (:attr:`WebSocketConnection.state`), as the HTTP core's."""

    OPEN = "open"  # messages flow both ways
    CLOSING = "closing"  # we sent a close frame and wait for the peer's
    CLOSED = "closed"  # the close handshake completed, or the connection failed


OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class Ping:
    """A ping frame (one arrived, or one to send).  ``opcode`` and ``data`` as Swoole's
    ``Frame`` has them."""

    __slots__ = ("payload",)
    opcode = PING

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload

    @property
    def data(self) -> bytes:
        return self.payload

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.payload == self.payload

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.payload!r})"


class Pong(Ping):
    """A pong frame (one arrived, or one to send)."""

    __slots__ = ()
    opcode = PONG


class CloseFrame:
    """The peer's close frame, as it came (``code`` 1005 when it had none); the close
    handshake goes on by itself."""

    __slots__ = ("code", "reason")
    opcode = CLOSE

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason

    @property
    def data(self) -> bytes:
        return b"" if self.code == NO_STATUS else close_payload(self.code, self.reason)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CloseFrame) and (other.code, other.reason) == (
            self.code, self.reason,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"CloseFrame({self.code}, {self.reason!r})"


class Send:
    """Bytes the connection must write now."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Send) and other.data == self.data

    def __repr__(self) -> str:
        return f"Send({self.data!r})"


class Closed:
    """The WebSocket is closed: ``code`` and ``reason`` are the peer's (a completed close
    handshake, 1005 when its close frame had no code) or ours (the peer broke the protocol,
    or we closed and it answered); ``clean`` is False when we failed the connection."""

    __slots__ = ("code", "reason", "clean")

    def __init__(self, code: int, reason: str, clean: bool = True) -> None:
        self.code, self.reason, self.clean = code, reason, clean

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Closed) and (other.code, other.reason, other.clean) == (
            self.code, self.reason, self.clean,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Closed({self.code}, {self.reason!r}, clean={self.clean})"


class _PeerError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


def accept_key(key: bytes | str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    if isinstance(key, str):
        key = key.encode("latin-1")
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()


def _apply_mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same); done as
    one big-integer XOR, so no Python loop runs per byte (about 250 MB/s)."""
    n = len(data)
    if not n:
        return b""
    return (_from_bytes(data, "big") ^ _from_bytes((key * ((n >> 2) + 1))[:n], "big")).to_bytes(
        n, "big"
    )


apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes] = _apply_mask
try:  # websockets' C routine: about 100 times faster on large messages (27 GB/s at 64 KiB)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets is a dependency; its C part may be missing
    pass


def valid_close_code(code: int) -> bool:
    """Codes a close frame may carry (RFC 6455 section 7.4 and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _header(opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return bytes((b0, 126)) + length.to_bytes(2, "big")
    return bytes((b0, 127)) + length.to_bytes(8, "big")


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """One unmasked frame (what a server sends)."""
    return _header(opcode, len(payload), fin, rsv1) + payload


def masked_frame(
    opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, key: bytes | None = None
) -> bytes:
    """One masked frame (what a client sends)."""
    key = os.urandom(4) if key is None else key
    head = bytearray(_header(opcode, len(payload), fin, rsv1))
    head[1] |= 0x80
    return bytes(head) + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame; the reason is cut to fit a control frame (123 bytes)."""
    data = reason.encode()[:123]
    while True:  # do not cut inside a UTF-8 sequence
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return code.to_bytes(2, "big") + data


class PerMessageDeflate:
    """permessage-deflate (RFC 7692) as negotiated for one connection.

    :meth:`accept` turns a client's offer into the parameters the server answers with (or
    None to decline); the connection then compresses what it sends and inflates what it
    receives, the inflater bounded by the message limit.
    """

    def __init__(
        self,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int = 15,
        client_max_window_bits: int = 15,
        level: int = 6,
        client_side: bool = False,
    ) -> None:
        self.serverNoContextTakeover = server_no_context_takeover
        self.clientNoContextTakeover = client_no_context_takeover
        self.serverMaxWindowBits = server_max_window_bits
        self.clientMaxWindowBits = client_max_window_bits
        self.level = level
        self.clientSide = client_side
        self._compress: Any = None
        self._decompress: Any = None

    @classmethod
    def accept(cls, header: str | None, level: int = 6) -> PerMessageDeflate | None:
        """The first acceptable ``permessage-deflate`` offer in a ``Sec-WebSocket-Extensions``
        header, or None (no offer, or none we can take)."""
        if not header:
            return None
        for offer in header.split(","):
            name, *params = (p.strip() for p in offer.split(";"))
            if name.lower() != "permessage-deflate":
                continue
            found = cls._parse(params, level)
            if found is not None:
                return found
        return None

    @classmethod
    def _parse(cls, params: list[str], level: int) -> PerMessageDeflate | None:
        seen: set[str] = set()
        ext = cls(level=level)
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key in seen:
                return None  # a parameter twice: decline this offer
            seen.add(key)
            if key == "server_no_context_takeover" and not value:
                ext.serverNoContextTakeover = True
            elif key == "client_no_context_takeover" and not value:
                ext.clientNoContextTakeover = True
            elif key == "server_max_window_bits":
                if not value.isdigit() or not 8 <= int(value) <= 15:
                    return None
                ext.serverMaxWindowBits = int(value)
            elif key == "client_max_window_bits":
                if value and (not value.isdigit() or not 8 <= int(value) <= 15):
                    return None
                ext.clientMaxWindowBits = int(value) if value else 15
            else:
                return None
        if ext.serverMaxWindowBits == 8:
            return None  # zlib cannot deflate raw with an 8-bit window, and 9 would be more
        return ext

    def response(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value the server answers with."""
        parts = ["permessage-deflate"]
        if self.serverNoContextTakeover:
            parts.append("server_no_context_takeover")
        if self.clientNoContextTakeover:
            parts.append("client_no_context_takeover")
        if self.serverMaxWindowBits != 15:
            parts.append(f"server_max_window_bits={self.serverMaxWindowBits}")
        if self.clientMaxWindowBits != 15:
            parts.append(f"client_max_window_bits={self.clientMaxWindowBits}")
        return "; ".join(parts)

    def _own(self) -> tuple[bool, int, bool, int]:
        """(our no-context-takeover, our window bits, the peer's ..., the peer's ...)."""
        if self.clientSide:
            return (self.clientNoContextTakeover, self.clientMaxWindowBits,
                    self.serverNoContextTakeover, self.serverMaxWindowBits)  # fmt: skip
        return (self.serverNoContextTakeover, self.serverMaxWindowBits,
                self.clientNoContextTakeover, self.clientMaxWindowBits)  # fmt: skip

    def compress(self, data: bytes) -> bytes:
        """One whole message, deflated (the tail RFC 7692 drops, dropped)."""
        no_takeover, bits, _, _ = self._own()
        if self._compress is None or no_takeover:
            self._compress = zlib.compressobj(self.level, zlib.DEFLATED, -bits)
        out: bytes = self._compress.compress(data) + self._compress.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4] if out.endswith(_DEFLATE_TAIL) else out

    def decompress(self, data: bytes, fin: bool, limit: int) -> bytes:
        """Inflate one frame of a compressed message, producing at most ``limit`` + 1 bytes
        (more means the message is too big: the caller refuses it)."""
        _, _, peer_no_takeover, _ = self._own()
        if self._decompress is None:  # the largest window inflates any smaller one
            self._decompress = zlib.decompressobj(-15)
        if fin:
            data += _DEFLATE_TAIL
        try:
            out: bytes = self._decompress.decompress(data, limit + 1)
        except zlib.error as e:
            raise _PeerError(INVALID_DATA, f"bad permessage-deflate data: {e}") from None
        if fin and peer_no_takeover:
            self._decompress = None
        return out


class WebSocketConnection:
    """One WebSocket connection's protocol state: see the module docstring.

    ``client_side``: frames we send are masked and frames we receive must not be (a server:
    the reverse).  ``max_message``: the largest message accepted, in bytes after inflation
    (larger: close 1009).  ``deflate``: the negotiated :class:`PerMessageDeflate`, or None.
    ``auto_pong``: answer pings (False: the application does, with :meth:`pong`).
    ``close_frames``: report the peer's close frame as a :class:`CloseFrame` event.
    """

    __slots__ = (
        "clientSide", "maxMessage", "deflate", "autoPong", "closeFrames", "state", "bytesIn",
        "bytesOut", "closeSent", "_buf", "_op", "_parts", "_size", "_decoder", "_compressed",
    )  # fmt: skip

    def __init__(
        self,
        client_side: bool = False,
        max_message: int = 2 * 1024 * 1024,
        deflate: PerMessageDeflate | None = None,
        auto_pong: bool = True,
        close_frames: bool = False,
    ) -> None:
        self.clientSide = client_side
        self.maxMessage = max_message
        self.deflate = deflate
        self.autoPong = auto_pong
        self.closeFrames = close_frames
        self.state = OPEN
        self.bytesIn = self.bytesOut = 0
        self.closeSent: tuple[int, str] | None = None  # (code, reason) of the close we sent
        self._buf = bytearray()  # the start of a frame not yet whole
        self._op = CONT  # the opcode of the fragmented message in progress (CONT: none)
        self._parts: list[Any] = _NO_PARTS  # a list of its own once a message is fragmented
        self._size = 0  # bytes of the message in progress (inflated)
        self._decoder: Any = None  # incremental UTF-8 decoder of a fragmented text message
        self._compressed = False

    def atMessageBoundary(self) -> bool:  # noqa: N802
        """Open, uncompressed, with no frame or fragmented message in progress: a new
        connection object with the same settings would carry on from here."""
        return (self.state is OPEN and self.closeSent is None and self.deflate is None
                and not self._buf and self._op == CONT)  # fmt: skip

    # -- reading ------------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Any]:
        """Parse ``data``; return the events it completes (see the module docstring)."""
        n = len(data)
        self.bytesIn += n
        b0 = data[0] if 6 < n < 132 else 0
        if (
            (b0 == 0x82 or b0 == 0x81)
            and data[1] == n + 122  # masked, 7-bit length: the read is exactly one frame
            and not self._buf
            and self._op == CONT
            and self.state is OPEN
            and not self.clientSide
            and n - 6 <= self.maxMessage
        ):  # the common case, as the loop below would take it
            payload = apply_mask(data[6:], data[2:6])
            if b0 == 0x82:
                return [payload]
            try:
                return [payload.decode()]
            except UnicodeDecodeError:
                pass  # the loop below refuses it
        if self.state is CLOSED:
            return []
        buf = self._buf
        view: bytes | bytearray = data
        if buf:
            buf += data
            view = buf
        events: list[Any] = []
        end = len(view)
        pos = 0
        try:
            while end - pos >= 2:
                b0, b1 = view[pos], view[pos + 1]
                length = b1 & 0x7F
                start = pos + 2
                if length >= 126:
                    if length == 126:
                        if end - start < 2:
                            break
                        length = int.from_bytes(view[start : start + 2], "big")
                        start += 2
                    else:
                        if end - start < 8:
                            break
                        length = int.from_bytes(view[start : start + 8], "big")
                        start += 8
                        if length >> 63:
                            raise _PeerError(PROTOCOL_ERROR, "frame length with its top bit set")
                self._check(b0, b1 & 0x80, length)
                if b1 & 0x80:
                    if end - start < 4:
                        break
                    key = view[start : start + 4]
                    start += 4
                    if end - start < length:
                        break
                    if view is buf or length > 512:  # unmask in place, without a copy first
                        with memoryview(view) as whole:
                            part = whole[start : start + length]
                            payload = apply_mask(part, key)
                            part.release()
                    else:
                        payload = apply_mask(view[start : start + length], key)
                else:
                    if end - start < length:
                        break
                    payload = bytes(view[start : start + length])
                pos = start + length
                self._frame(b0, payload, events)
                if self.state is CLOSED:
                    pos = end
                    break
        except _PeerError as failure:
            self._fail(failure.code, failure.reason, events)
            pos = end
        if pos == end:
            if buf:
                buf.clear()
        elif view is buf:
            del buf[:pos]
        else:
            buf += view[pos:]
        return events

    def receive_eof(self) -> list[Any]:
        """The TCP connection ended: Closed(1006) unless the close handshake completed."""
        if self.state is CLOSED:
            return []
        self.state = CLOSED
        return [Closed(ABNORMAL, "connection closed without a close frame", clean=False)]

    def _check(self, b0: int, masked: int, length: int) -> None:
        """The rules a frame header alone decides (so a too-big frame is refused before its
        payload is read)."""
        op = b0 & 0x0F
        if b0 & 0x70:
            if (b0 & 0x70) != 0x40 or self.deflate is None or op not in (TEXT, BINARY):
                raise _PeerError(PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
        if op >= CLOSE:
            if op > PONG:
                raise _PeerError(PROTOCOL_ERROR, f"reserved opcode {op:#x}")
            if not b0 & 0x80:
                raise _PeerError(PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise _PeerError(PROTOCOL_ERROR, f"control frame of {length} bytes (at most 125)")
        elif op > BINARY:
            raise _PeerError(PROTOCOL_ERROR, f"reserved opcode {op:#x}")
        elif op == CONT:
            if self._op == CONT:
                raise _PeerError(PROTOCOL_ERROR, "continuation frame with no message in progress")
        elif self._op != CONT:
            raise _PeerError(PROTOCOL_ERROR, "new message before the fragmented one ended")
        if op < CLOSE and self._size + length > self.maxMessage:
            raise _PeerError(TOO_BIG, f"message of at least {self._size + length} bytes exceeds "
                                 f"package_max_length={self.maxMessage}")  # fmt: skip
        if bool(masked) == self.clientSide:
            raise _PeerError(PROTOCOL_ERROR, "masked frame from the server" if self.clientSide
                        else "unmasked frame from the client")  # fmt: skip

    def _frame(self, b0: int, payload: bytes, events: list[Any]) -> None:
        op = b0 & 0x0F
        fin = b0 & 0x80
        if op == TEXT and fin and not b0 & 0x40:  # the common case: a whole text message
            if self.state is OPEN:
                try:
                    events.append(payload.decode())
                except UnicodeDecodeError:
                    raise _PeerError(INVALID_DATA, "text message is not valid UTF-8") from None
            return
        if op == BINARY and fin and not b0 & 0x40:
            if self.state is OPEN:
                events.append(payload)
            return
        if op < CLOSE:
            self._fragment(op, bool(fin), b0 & 0x40, payload, events)
        elif op == PING:
            events.append(Ping(payload))
            if self.state is OPEN and self.autoPong:
                events.append(Send(self._frame_out(PONG, payload)))
        elif op == PONG:
            events.append(Pong(payload))
        else:
            self._closeReceived(payload, events)

    def _fragment(self, op: int, fin: bool, rsv1: int, payload: bytes, events: list[Any]) -> None:
        if op != CONT:  # the first frame of a message
            self._op, self._parts, self._size = op, [], 0
            self._compressed = bool(rsv1)
            self._decoder = codecs.getincrementaldecoder("utf-8")() if op == TEXT else None
        if self._compressed:
            assert self.deflate is not None
            payload = self.deflate.decompress(payload, fin, self.maxMessage - self._size)
            if self._size + len(payload) > self.maxMessage:
                raise _PeerError(TOO_BIG, f"message inflates past "
                                     f"package_max_length={self.maxMessage}")  # fmt: skip
        self._size += len(payload)
        if self._decoder is not None:
            try:
                self._parts.append(self._decoder.decode(payload, fin))
            except UnicodeDecodeError:
                raise _PeerError(INVALID_DATA, "text message is not valid UTF-8") from None
        else:
            self._parts.append(payload)
        if fin:
            parts, self._parts = self._parts, _NO_PARTS
            message: Any = "".join(parts) if self._op == TEXT else b"".join(parts)
            self._op, self._size, self._decoder = CONT, 0, None
            if self.state is OPEN:
                events.append(message)

    def _closeReceived(self, payload: bytes, events: list[Any]) -> None:
        if len(payload) == 1:
            raise _PeerError(PROTOCOL_ERROR, "close frame with a 1-byte payload")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                raise _PeerError(PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _PeerError(INVALID_DATA, "close reason is not valid UTF-8") from None
        else:
            code, reason = NO_STATUS, ""
        if self.closeFrames:
            events.append(CloseFrame(code, reason))
        if self.state is OPEN:  # the peer began the close: answer with its code
            events.append(Send(self._frame_out(CLOSE, payload[:2])))
            self.closeSent = (code, "")
        self.state = CLOSED
        events.append(Closed(code, reason))

    def _fail(self, code: int, reason: str, events: list[Any]) -> None:
        if self.state is OPEN:
            events.append(Send(self._frame_out(CLOSE, close_payload(code, reason))))
            self.closeSent = (code, reason)
        self.state = CLOSED
        self._buf = bytearray()
        self._parts = _NO_PARTS
        events.append(Closed(code, reason, clean=False))

    # -- writing ------------------------------------------------------------------------------
    def _frame_out(
        self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False
    ) -> bytes:
        data = masked_frame(opcode, payload, fin, rsv1) if self.clientSide else frame(
            opcode, payload, fin, rsv1
        )  # fmt: skip
        self.bytesOut += len(data)
        return data

    def send(self, message: str | bytes | Ping) -> bytes:
        """A message as bytes to write: text for ``str``, binary for ``bytes``, a control
        frame for a :class:`Ping` or :class:`Pong`; b"" once the close began (nothing may
        follow a close frame)."""
        if self.state is not OPEN:
            return b""
        return self.encode(message)

    def encode(self, message: str | bytes | Ping) -> bytes:
        """A message as a frame whatever the state: for answers to messages that arrived
        before the peer's close, written before the reply to it (the glue knows when).  A
        :class:`Ping` or :class:`Pong` only while open."""
        if isinstance(message, str):
            opcode, payload = TEXT, message.encode()
        elif isinstance(message, Ping):
            if message.opcode == PONG:
                return self.pong(message.payload)
            return self.ping(message.payload)
        else:
            opcode, payload = BINARY, bytes(message)
        if self.deflate is not None:
            return self._frame_out(opcode, self.deflate.compress(payload), rsv1=True)
        if self.clientSide:
            return self._frame_out(opcode, payload)
        n = len(payload)
        data = (bytes((0x80 | opcode, n)) if n < 126 else _header(opcode, n)) + payload
        self.bytesOut += len(data)
        return data

    def ping(self, payload: bytes = b"") -> bytes:
        """A ping frame (at most 125 bytes of payload)."""
        if len(payload) > 125:
            raise ValueError(f"ping payload of {len(payload)} bytes (at most 125)")
        return self._frame_out(PING, payload) if self.state is OPEN else b""

    def pong(self, payload: bytes = b"") -> bytes:
        """A pong frame: the answer to a ping (with ``auto_pong`` False), or unsolicited (a
        heartbeat the peer need not answer)."""
        if len(payload) > 125:
            raise ValueError(f"pong payload of {len(payload)} bytes (at most 125)")
        return self._frame_out(PONG, payload) if self.state is OPEN else b""

    def close(self, code: int = NORMAL, reason: str = "") -> bytes:
        """Begin the close handshake: the close frame to write (b"" if it began already).
        The peer's answer then arrives as :class:`Closed`."""
        if self.state is not OPEN:
            return b""
        if not valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent (1000-1003, 1007-1014, "
                             "3000-4999)")  # fmt: skip
        self.state = CLOSING
        self.closeSent = (code, reason)
        return self._frame_out(CLOSE, close_payload(code, reason))
