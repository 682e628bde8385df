"""HTTP/1.1 server: protocol, factory, Request and Response.

``HTTPFactory(handler, settings)`` serves ``handler(request, response)``, a plain function or
an ``async def`` (it may also return a Deferred).  It works under ``twistd swoole`` and in any
Twisted program: ``listen_tcp(8080, HTTPFactory(handler))`` or
``reactor.listenTCP(8080, HTTPFactory(handler))``.

Keep-alive follows HTTP/1.0 and 1.1 (a 1.0 ``Connection: keep-alive`` is answered in kind);
pipelined requests are answered in order, bodies included; ``Expect: 100-continue`` is answered
only when the declared body is within ``package_max_length``.

Resource handling: a connection holds at most one request head (``http_header_max_length``),
one body (``package_max_length``) and a bounded queue of pipelined requests; reading pauses
while the queue is full.  Idle keep-alive connections close after ``http_keepalive_timeout``;
a request head not complete within ``http_header_timeout`` gets ``408``.

Error handling: a refused request (431, 413, 400) is answered with ``Connection: close``, a
short body and a WARNING with the numbers; nothing of it reaches the handler; the connection
then drains the client's input for a short bounded time (like nginx's lingering close) so the
client reads the status instead of a reset.  An exception in the handler gives ``500`` (or an
abort if the response had started) and a logged traceback; the worker carries on.
"""

from __future__ import annotations

import inspect
import mimetypes
import os
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import HTTPRequestError
from tx_swoole.protocols._http11 import ParsedRequest, RequestReader
from tx_swoole.protocols._request import Headers, Request
from tx_swoole.protocols.tcp import CONNECTION_DONE, ConnectionTable, TrackedProtocol
from tx_swoole.settings import Settings

__all__ = ["HTTPFactory", "HTTPProtocol", "Headers", "Request", "Response", "status_line"]
log = SwooleLogger("tx_swoole.http")

SERVER_NAME = b"tx_swoole"
MAX_PIPELINE = 32  # queued requests per connection before reading pauses
LINGER_TIME = 2.0  # seconds to drain a client's input after an error response (nginx: 5)
LINGER_BYTES = 1 << 20  # ... or until this many bytes were discarded
DRAIN_IDLE_GRACE = 0.5  # seconds a just-answered connection may still send while draining
COARSE = 1.0  # resolution of the factory's cached clock (its sweep interval)
_STATUS_LINES: dict[int, bytes] = {}
_FORBIDDEN = (b"\r", b"\n", b"\0")


def status_line(code: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n``, cached for standard reasons."""
    if reason is None:
        line = _STATUS_LINES.get(code)
        if line is not None:
            return line
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
        line = b"HTTP/1.1 %d %s\r\n" % (code, reason.encode("latin-1"))
        _STATUS_LINES[code] = line
        return line
    return b"HTTP/1.1 %d %s\r\n" % (code, _clean(reason, "reason"))


def _clean(value: str | bytes | int, what: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1")
    elif isinstance(value, int):
        value = b"%d" % value
    for c in _FORBIDDEN:
        if c in value:
            raise ValueError(f"{what} {value[:40]!r} contains CR, LF or NUL (response splitting)")
    return value


def _clean_name(name: str | bytes) -> bytes:
    raw = _clean(name, "header name")
    if not raw or b":" in raw or b" " in raw or b"\t" in raw:
        raise ValueError(f"header name {raw[:40]!r} is empty or contains ':' or whitespace")
    return raw


# Flat (name, value, name, value, ...) tuple of a response's headers -> their checked lines
# (plus the default Content-Type when none is among them).  Hot constant headers hit it.
_BLOCKS: dict[tuple[Any, ...], bytes] = {}
_CACHE_SIZE = 4096  # entries kept in each cache
_DEFAULT_CTYPE = b"Content-Type: text/html\r\n"


def _header_line(name: str | bytes, value: str | bytes | int) -> bytes:
    return _clean_name(name) + b": " + _clean(value, "header value") + b"\r\n"


def _header_block(headers: tuple[Any, ...]) -> bytes:
    """Check and serialise flat headers; ValueError names the first bad one."""
    lines = [_header_line(headers[i], headers[i + 1]) for i in range(0, len(headers), 2)]
    if not any(line[:13].lower() == b"content-type:" for line in lines):
        lines.append(_DEFAULT_CTYPE)
    block = b"".join(lines)
    if len(_BLOCKS) < _CACHE_SIZE and len(block) < 1024:
        _BLOCKS[headers] = block
    return block


_LENGTH_LINES: dict[int, bytes] = {}


def _length_line(length: int) -> bytes:
    line = b"Content-Length: %d\r\n" % length
    if len(_LENGTH_LINES) < _CACHE_SIZE:
        _LENGTH_LINES[length] = line
    return line


_OK = status_line(200)


class Response:
    """The response to one request; ``end()`` it once (the server ends it for you when a
    handler returns without doing so).  Made by the server, one per request.

    Header names and values with CR, LF or NUL are refused (no response splitting): ``end``,
    ``write`` or ``sendfile`` raise ``ValueError`` before anything is sent.  Once the
    connection is gone, ``write``/``end`` return False.
    """

    _proto: HTTPProtocol
    _request: ParsedRequest
    _headers: list[Any]  # flat: name, value, name, value, ...
    _status: bytes  # the status line
    _closing: bool  # set when the head is written: the connection closes after this response
    started: bool  # the head was sent (by write() or sendfile(): the body is streamed)
    ended: bool  # end() or sendfile() was called: nothing more may be written

    @property
    def status_code(self) -> int:
        return int(self._status[9:12])

    def status(self, code: int, reason: str | None = None) -> None:
        """Set the status code (and optionally the reason phrase)."""
        if not 100 <= code <= 999:
            raise ValueError(f"status code {code} is not in 100..999")
        self._status = status_line(code, reason)

    def header(self, name: str | bytes, value: str | bytes | int) -> None:
        """Add a header; repeat the call for repeated headers.

        Names and values are checked when the head is written: one with CR, LF or NUL (or a
        name with ``:`` or whitespace) makes ``end()``/``write()``/``sendfile()`` raise
        ``ValueError`` before anything is sent.
        """
        self._headers += (name, value)

    def cookie(
        self,
        name: str,
        value: str = "",
        *,
        expires: str | None = None,
        max_age: int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Add a ``Set-Cookie`` header; the value is percent-encoded."""
        if not name or any(c in name for c in '=;, \t\r\n"'):
            raise ValueError(f"cookie name {name!r} is empty or contains separators")
        parts = [f"{name}={quote(value, safe='')}"]
        for attr, val in (("Expires", expires), ("Max-Age", max_age), ("Path", path),
                          ("Domain", domain), ("SameSite", samesite)):  # fmt: skip
            if val is not None:
                parts.append(f"{attr}={val}")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        self.header(b"Set-Cookie", "; ".join(parts))

    def redirect(self, location: str, status: int = 302) -> bool:
        """Answer with a redirect to ``location``."""
        self.status(status)
        self.header(b"Location", location)
        return self.end()

    def _head_bytes(self, length: int | None, body: bytes = b"") -> bytes:
        """Status line and headers (and ``body``, joined in the same copy); ``length`` None:
        the body follows in chunks (HTTP/1.1) or until the connection closes (HTTP/1.0)."""
        request = self._request
        server = self._proto.server
        if request.keep_alive and not server.draining:
            self._closing = False
            tail = b"\r\n" if request.version == "1.1" else b"Connection: keep-alive\r\n\r\n"
        else:
            self._closing = True
            tail = b"Connection: close\r\n\r\n"
        if length is not None:
            framing = _LENGTH_LINES.get(length) or _length_line(length)
        elif request.version == "1.1":
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            self._closing = True
            tail = b"Connection: close\r\n\r\n"
            framing = b""
        headers = self._headers
        if headers:
            key = tuple(headers)
            block = _BLOCKS.get(key) or _header_block(key)
        else:
            block = _DEFAULT_CTYPE
        if request.raw_method == b"HEAD":
            body = b""
        return b"".join((self._status, server.defaultHeaders, block, framing, tail, body))

    def write(self, data: str | bytes) -> bool:
        """Stream a piece of the body (chunked for HTTP/1.1); False if the client is gone."""
        if self.ended or not self._proto.connected:
            return False
        self._stream(data)
        return True

    def _stream(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        transport = self._proto.transport
        if not self.started:
            head = self._head_bytes(None)  # may raise ValueError: then nothing was sent
            self.started = True
            transport.write(head)
        if data and self._request.raw_method != b"HEAD":
            if self._request.version == "1.1":
                transport.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                transport.write(data)

    def end(self, body: str | bytes = b"") -> bool:
        """Finish the response with ``body`` (after any ``write``); False if already ended or
        the client is gone."""
        if self.ended:
            return False
        proto = self._proto
        if not proto.connected:
            self.ended = True
            return False
        if body.__class__ is not bytes:
            body = body.encode() if isinstance(body, str) else bytes(body)
        if self.started:  # streamed with write()
            self.ended = True
            if body:
                self._stream(body)
            if self._request.version == "1.1":
                proto.transport.write(b"0\r\n\r\n")
        else:
            data = self._head_bytes(len(body), body)  # may raise ValueError: nothing sent
            self.started = self.ended = True
            proto.transport.write(data)
        proto.responseEnded(self)
        return True

    def _has_content_type(self) -> bool:
        for name in self._headers[::2]:
            raw = name.encode("latin-1", "replace") if isinstance(name, str) else name
            if raw.lower() == b"content-type":
                return True
        return False

    def sendfile(self, path: str, content_type: str | None = None) -> defer.Deferred[None]:
        """Send the file at ``path`` as the whole body; the Deferred fires when it is sent.

        Raises ``OSError`` (synchronously, before anything is sent) if the file cannot be
        opened, so the handler can answer otherwise.
        """
        if self.started or self.ended:
            raise RuntimeError("sendfile() after the response started")
        f = open(path, "rb")  # noqa: SIM115 - closed when the transfer ends
        size = os.fstat(f.fileno()).st_size
        if not self._has_content_type():
            self.header(b"Content-Type", content_type or mimetypes.guess_type(path)[0] or
                        "application/octet-stream")  # fmt: skip
        try:
            head = self._head_bytes(size)
        except ValueError:
            f.close()
            raise
        self.started = self.ended = True
        proto = self._proto
        proto.transport.write(head)
        if self._request.raw_method == b"HEAD" or not size:
            f.close()
            proto.responseEnded(self)
            return defer.succeed(None)
        d: defer.Deferred[Any] = FileSender().beginFileTransfer(f, proto.transport)

        def done(result: Any) -> None:
            f.close()
            if isinstance(result, Failure):
                proto.abort("error")
            else:
                proto.responseEnded(self)

        d.addBoth(done)
        return d


class HTTPProtocol(TrackedProtocol):
    """One HTTP/1.x connection: parses with :class:`RequestReader`, serves requests in order.

    Resource handling and error handling: see the module docstring.
    """

    __slots__ = (
        "_reader", "_queue", "_current", "_busy", "_paused", "_idleSince", "_headSince",
        "_discarded", "_lingerCall",
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._reader: Any = None  # a RequestReader once connected
        self._queue: deque[Request] = deque()
        self._current: Response | None = None
        self._busy = False
        self._paused = False
        self._idleSince = 0.0
        self._headSince = -1.0  # when the head in progress began; -1: none
        self._discarded = -1  # >= 0 while lingering after an error response
        self._lingerCall: Any = None

    def connectionMade(self) -> None:
        s = self.server.settings
        self._reader = RequestReader(
            s.http_header_max_length, s.package_max_length, Request, self._serve
        )
        self._idleSince = self.server.seconds()

    def dataReceived(self, data: bytes) -> None:
        self.lastRecvTime = self.server.now
        if self._discarded >= 0:
            self._linger(len(data))
            return
        reader = self._reader
        # Serves (or queues) each complete request as it is parsed: see _serve.
        if reader.push(data) or self._queue or self._headSince >= 0:
            self._afterFeed(reader)

    def _afterFeed(self, reader: RequestReader) -> None:
        if self._discarded >= 0:
            return  # answered with Connection: close (or refused) during this read
        if reader.error is None:
            if reader.in_head:
                if self._headSince < 0:
                    self._headSince = self.server.now
            else:
                self._headSince = -1.0
            if len(self._queue) >= MAX_PIPELINE and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
        self._answerWhenIdle(reader)

    def _answerWhenIdle(self, reader: RequestReader) -> None:
        """With no request in progress or queued: refuse the reader's error, or send the
        100 Continue it wants."""
        if self._current is None and not self._queue and self._discarded < 0:
            if reader.error is not None:
                self._refuse(reader.error)
            elif reader.continue_wanted:
                self._sendContinue(reader)

    # -- serving ----------------------------------------------------------------------------
    def _serve(self, request: Request) -> None:
        # Outside _serveQueued, no request in progress means none queued either.
        if self._current is not None:
            self._queue.append(request)
            return
        server = self.server
        server.requestCount += 1
        if server.maxRequestReached is not None:
            server.maxRequestReached()
        request.owner = self
        response = self._current = Response()
        response._proto = self
        response._request = request
        response._headers = []
        response._status = _OK
        response.started = response.ended = False
        try:
            result = server.handler(request, response)
        except Exception:
            self._handlerFailed(response, Failure())
            return
        if result is None:
            if not response.ended:
                response.end()
        else:
            self._handlerReturned(response, result)

    def _handlerReturned(self, response: Response, result: Any) -> None:
        if inspect.iscoroutine(result):
            result = defer.Deferred.fromCoroutine(result)
        if isinstance(result, defer.Deferred):
            result.addCallbacks(
                lambda _: response.ended or response.end(),
                lambda f: self._handlerFailed(response, f),
            )
        elif not response.ended:
            response.end()

    def _handlerFailed(self, response: Response, failure: Failure) -> None:
        log.failure(
            "handler failed on connection {connId}; answering 500", failure, connId=self.connId
        )
        if response.ended or not self.connected:
            return
        if response.started:
            response.ended = True
            self.abort("error")
            return
        response._headers = []
        response._status = status_line(500)
        response.end(b"<h1>500 Internal Server Error</h1>")

    def responseEnded(self, response: Response) -> None:
        """Called by :meth:`Response.end`: close, or serve the next pipelined request."""
        if response is not self._current:
            return
        self._current = None
        if response._closing:
            self._closeAfterResponse()
            return
        server = self.server
        # Coarse time (updated every second) unless draining, where the grace needs precision.
        self._idleSince = server.seconds() if server.draining else server.now
        reader = self._reader
        if self._queue or reader.error is not None or reader.continue_wanted:
            self._serveQueued()

    def _serveQueued(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            while self._current is None and self._queue and self.connected:
                self._serve(self._queue.popleft())
        finally:
            self._busy = False
        if self._paused and len(self._queue) < MAX_PIPELINE // 2 and self.connected:
            self._paused = False
            self.transport.resumeProducing()
        self._answerWhenIdle(self._reader)

    def _sendContinue(self, reader: RequestReader) -> None:
        reader.continue_sent()
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _closeAfterResponse(self) -> None:
        self._queue.clear()
        if self._closeReason is None:
            self._closeReason = "server"
        # Half-close, then linger: pipelined bytes the client already sent must not turn
        # our FIN into a reset before it has read the response.
        self._discarded = 0
        self._reader.stop()  # also ends the parse in progress if this runs inside it
        self.transport.loseWriteConnection()
        self._lingerCall = self.server.reactor.callLater(LINGER_TIME, self._lingerDone)

    # -- errors and lingering close -----------------------------------------------------------
    def _refuse(self, error: HTTPRequestError) -> None:
        peer = self.transport.getPeer()
        log.warn(
            "{status} for {peer}: {message}",
            status=error.status, peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            message=error.message,
        )  # fmt: skip
        self._closeReason = "limit" if error.status in (413, 431) else "error"
        self._answerAndClose(error.status, error.reason)

    def _answerAndClose(self, status: int, reason: bytes) -> None:
        """A short text/plain answer with Connection: close, then the lingering close."""
        body = b"%d %s\n" % (status, reason)
        self.transport.write(
            status_line(status) + self.server.defaultHeaders
            + b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )  # fmt: skip
        self._closeAfterResponse()

    def _linger(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_BYTES:
            self._lingerDone()

    def _lingerDone(self) -> None:
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        self._lingerCall = None
        if self.connected:
            self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        if self._reader is not None:
            self._reader.stop()
        super().abort(reason)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        if self._lingerCall is not None and self._lingerCall.active():
            self._lingerCall.cancel()
        self._queue.clear()
        if self._current is not None:
            self._current.ended = True
        super().connectionLost(reason)

    # -- timeouts and draining ------------------------------------------------------------------
    def idleExpired(self, now: float) -> bool:
        if self._discarded >= 0 or self._current is not None or self._queue:
            return False
        s = self.server.settings
        if self._headSince >= 0:
            if s.http_header_timeout and now - self._headSince > s.http_header_timeout:
                self._timeoutHead()
            return False
        return bool(s.http_keepalive_timeout) and now - self._idleSince > s.http_keepalive_timeout

    def _timeoutHead(self) -> None:
        log.info(
            "request head on connection {connId} not complete within http_header_timeout={t}s",
            connId=self.connId, t=self.server.settings.http_header_timeout,
        )  # fmt: skip
        self._answerAndClose(408, b"Request Timeout")

    def drainRequested(self) -> None:
        """Close if idle; otherwise the response in progress says Connection: close.

        A connection answered less than ``DRAIN_IDLE_GRACE`` ago is left that long to send
        its next request (answered with Connection: close): closing it at once would race a
        request already on the wire, which the client would see as a dropped request.
        """
        reader = self._reader
        idle = self._current is None and not self._queue
        if not idle or reader is None or reader.in_head or self._discarded >= 0:
            return
        if self.server.seconds() - self._idleSince >= DRAIN_IDLE_GRACE:
            self._closeReason = "reload"
            self._closeAfterResponse()

    def describeState(self) -> str:
        if self._current is not None:
            return "answering a request"
        return "reading a request" if self._headSince >= 0 else "idle"


def _default_headers(name: bytes, now: float) -> bytes:
    return b"Server: %s\r\nDate: %s\r\n" % (name, formatdate(now, usegmt=True).encode("ascii"))


class HTTPFactory(ConnectionTable):
    """Serves ``handler(request, response)`` over HTTP/1.1; a Twisted ``ServerFactory``.

    ``settings`` are Swoole-named (:class:`~tx_swoole.settings.Settings` or a mapping);
    ``reactor`` supplies the clock.  ``requestCount`` counts requests served.
    """

    protocol = HTTPProtocol  # type: ignore[misc]
    sweepEvery = 1.0  # Date header refresh and HTTP timeouts

    def __init__(
        self,
        handler: Callable[[Request, Response], Any],
        settings: Settings | dict[str, Any] | None = None,
        *,
        reactor: Any = None,
        server_name: bytes = SERVER_NAME,
    ) -> None:
        super().__init__(HTTPProtocol, settings, reactor=reactor)
        self.handler = handler
        self.serverName = server_name
        self.now = self.seconds()
        self.defaultHeaders = _default_headers(server_name, self.now)
        self._drainer: task.LoopingCall | None = None

    def startDraining(self) -> None:
        """Refuse new connections; close idle ones now and the others as they go idle.

        Idle times are stamped with the coarse clock (up to ``COARSE`` s behind): a connection
        not surely idle for DRAIN_IDLE_GRACE gets the full grace from now.
        """
        now = self.seconds()
        for p in self.connections.values():
            if isinstance(p, HTTPProtocol) and now - p._idleSince < COARSE + DRAIN_IDLE_GRACE:
                p._idleSince = now
        super().startDraining()
        self._drainer = task.LoopingCall(self._closeIdle)
        self._drainer.clock = self.reactor
        self._drainer.start(DRAIN_IDLE_GRACE / 2, now=False)

    def _closeIdle(self) -> None:
        if not self.connections and self._drainer is not None and self._drainer.running:
            self._drainer.stop()
            return
        for p in list(self.connections.values()):
            p.drainRequested()

    def stopFactory(self) -> None:
        if self._drainer is not None and self._drainer.running:
            self._drainer.stop()
        super().stopFactory()

    def sweep(self) -> None:
        self.now = self.seconds()
        self.defaultHeaders = _default_headers(self.serverName, self.now)
        super().sweep()
