"""One HTTP/2 stream's response channel (:class:`H2Stream`): what a
:class:`~tx_swoole.protocols.http.Response` writes through on an HTTP/2 connection
(:mod:`tx_swoole.protocols.h2`), queueing the body for the client's flow-control windows.
"""

from __future__ import annotations

from collections import deque
from typing import IO, Any

from twisted.internet import defer
from zope.interface import implementer

from tx_swoole.protocols._compress import Encoder
from tx_swoole.protocols._hpack import CACHE_SIZE, encode_block
from tx_swoole.protocols._http11 import IDLE
from tx_swoole.protocols._http11_head import header_block
from tx_swoole.protocols._request import Request
from tx_swoole.protocols._response import IResponseChannel
from tx_swoole.protocols.body import StreamedBody

__all__ = ["H2Stream", "response_head"]
FILE_CHUNK = 1 << 16  # bytes of a file queued at a time
# Headers that mean nothing in HTTP/2 (RFC 9113 8.2.2): dropped from responses.
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade",
                  b"proxy-connection"})  # fmt: skip


_HEADS: dict[tuple[bytes, bytes, bytes, int | None], bytes] = {}


def response_head(status: bytes, block: bytes, server_headers: bytes,
                  length: int | None) -> bytes:  # fmt: skip
    """The HPACK block of an HTTP/1 status line and header block (cached: see _hpack)."""
    key = (status, block, server_headers, length)
    cached = _HEADS.get(key)
    if cached is not None:
        return cached
    out = [(b":status", status[9:12])]
    for line in (server_headers + block).split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            lower = name.lower()
            if lower not in _HOP:
                out.append((lower, value))
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    encoded = encode_block(out)
    if len(_HEADS) < CACHE_SIZE:
        _HEADS[key] = encoded
    return encoded


@implementer(IResponseChannel)
class H2Stream:
    """One stream's response channel (what :class:`Response` writes through), and its own
    sans-IO framing (``conn`` is itself): bytes are queued and sent as the client's window
    allows."""

    def __init__(self, proto: Any, stream_id: int, request: Request) -> None:
        self.proto = proto
        self.streamId = stream_id
        self.request = request
        self.server = proto.server
        self.transport = proto.transport
        self.conn = self  # the Response asks its channel's core: the stream frames itself
        self.body: list[bytes] = []
        self.bodySize = 0
        self.streamedBody: StreamedBody | None = None
        self.holding = False  # a streaming handler lags: its body is not acknowledged
        self.unacked = 0  # body bytes held so
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.ending = False  # end the stream once the queue is sent
        self.done = False  # answered, or reset
        self.blockedSince = 0.0  # when the window last stopped what is queued
        self.endSent = False
        self.served = False  # the handler has the request
        self.lastData = proto.server.seconds()  # when the request last brought bytes
        self._drainWaiters: list[defer.Deferred[None]] = []
        self._file: tuple[IO[bytes], defer.Deferred[None], int, Encoder | None] | None = None
        self.head_only = request.raw_method == b"HEAD"
        self.writing = IDLE  # (the Response asks: never anything to hand out after)
        self.held = ()
        self.started = False

    @property
    def connected(self) -> bool:
        return bool(self.proto.connected) and not self.done

    @property
    def transportPaused(self) -> bool:
        return self.queued > int(self.server.bufferOutputSize)

    # -- the core's side of a Response ------------------------------------------------------
    def respond(self, request: Request, status: bytes, headers: tuple[Any, ...], body: bytes,
                server_headers: bytes, now: float) -> bytes:  # fmt: skip
        block = header_block(headers)[0] if headers else b"Content-Type: text/html\r\n"
        self.started = True
        code = status[9:12]
        length = None if code in (b"204", b"304") else len(body)
        self.proto.sendHeaders(self, code, response_head(status, block, server_headers, length),
                               end=self.head_only or not body)  # fmt: skip
        if body and not self.head_only:
            self._queue(body, end=True)
        elif not self.done:
            self.finished()
        return b""

    def start_response(self, request: Request, status: bytes, headers: tuple[Any, ...],
                       length: int | None, server_headers: bytes) -> bytes:  # fmt: skip
        block = header_block(headers)[0] if headers else b"Content-Type: text/html\r\n"
        self.started = True
        self.proto.sendHeaders(
            self, status[9:12], response_head(status, block, server_headers, length), end=False
        )
        return b""

    def data(self, chunk: bytes) -> bytes:
        if chunk and not self.head_only:
            self._queue(chunk, end=False)
        return b""

    def end(self, now: float) -> bytes:
        self._queue(b"", end=True)
        return b""

    # -- the channel ------------------------------------------------------------------------
    def streamBody(self, head: bytes, data: bytes) -> bool:
        self.data(data)
        return self.connected and not self.transportPaused

    def endBody(self, tail: bytes) -> None:
        self.data(tail)
        self.end(0.0)

    def whenDrained(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if not self.transportPaused or not self.connected:
            d.callback(None)
        else:
            self._drainWaiters.append(d)
        return d

    def sendFile(self, f: IO[bytes], length: int | None = None,
                 encoder: Encoder | None = None) -> defer.Deferred[None]:  # fmt: skip
        d: defer.Deferred[None] = defer.Deferred()
        if not self.connected or self.head_only:
            f.close()
            self.end(0.0)
            d.callback(None)
            return d
        self._file = (f, d, -1 if length is None else length, encoder)
        self._moreFile()
        return d

    def _moreFile(self) -> None:
        while self._file is not None and self.queued < FILE_CHUNK and self.connected:
            f, d, left, encoder = self._file
            chunk = f.read(FILE_CHUNK if left < 0 else min(FILE_CHUNK, left)) if left else b""
            if not chunk:
                self._file = None
                f.close()
                self._queue(encoder.finish() if encoder is not None else b"", end=True)
                d.callback(None)
                return
            if left > 0:
                self._file = (f, d, left - len(chunk), encoder)
            self._queue(encoder.chunk(chunk) if encoder is not None else chunk, end=False)

    def responseEnded(self) -> None:
        """(The Response's call after an end: the stream ends itself.)"""

    # -- sending as the window allows ---------------------------------------------------------
    def _queue(self, data: bytes, end: bool) -> None:
        if self.done:
            return
        if data:
            self.queue.append(data)
            self.queued += len(data)
        self.ending = self.ending or end
        self.proto.flushStream(self)

    def sent(self) -> None:
        """Some of the queue went out: drained waiters, more of a file."""
        if self._file is not None:
            self._moreFile()
        if self._drainWaiters and not self.transportPaused:
            waiters, self._drainWaiters = self._drainWaiters, []
            for d in waiters:
                d.callback(None)

    def finished(self) -> None:
        """The stream is answered (or reset): let go of everything."""
        self.done = True
        self.queue.clear()
        self.queued = 0
        if self._file is not None:
            f, d, _, _ = self._file
            self._file = None
            f.close()
            d.callback(None)
        waiters, self._drainWaiters = self._drainWaiters, []
        for d in waiters:
            d.callback(None)
        self.proto.streamDone(self)
