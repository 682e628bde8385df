"""HTTP/1.1 server: protocol, factory, Request and Response.

``HTTPFactory(handler, settings)`` serves ``handler(request, response)``, a plain function or
an ``async def`` (it may also return a Deferred).  It works under ``twistd swoole`` and in any
Twisted program: ``listen_tcp(8080, HTTPFactory(handler))`` or
``reactor.listenTCP(8080, HTTPFactory(handler))``.

:class:`HTTPProtocol` is thin Twisted glue around the sans-IO core
:class:`~tx_swoole.protocols._http11.HTTPConnection`, in the shape of Twisted's HTTP/2 glue
around h2: it feeds the core what the transport reads, loops over the events it returns and
calls the handler outside the parser, and writes the bytes the core frames.

Resource handling: see the core's: one head, one body per request and a bounded number of
pipelined requests per connection; reading pauses while that many are held, and while the
client has more than ``buffer_output_size`` bytes unsent (queued requests wait too).  An idle
keep-alive connection closes after ``http_keepalive_timeout``; a head gets
``http_header_timeout`` from its first byte, a body ``http_body_timeout`` between reads (408);
a client that reads nothing of its unsent response for ``http_send_timeout`` is aborted.  A
half-closed client is answered everything it asked, then the connection closes.

Error handling: a refused request (431, 413, 400, 505, 408) is answered with
``Connection: close``, a short body and a WARNING with the numbers; nothing of it reaches the
handler; the connection then drains the client's input for a short bounded time (like nginx's
lingering close) so the client reads the status instead of a reset.  An exception in the
handler gives ``500`` (or an abort if the response had started) and a logged traceback; the
worker carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from typing import IO, Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import HTTP2PrefaceError, HTTPRequestError
from tx_swoole.protocols._compress import DEFAULT_TYPES, Encoder
from tx_swoole.protocols._http11 import (
    ABORT,
    CLOSE,
    CLOSED,
    END,
    IDLE,
    LINGER,
    LINGERING,
    HTTPConnection,
    Refused,
    Send,
)  # fmt: skip
from tx_swoole.protocols._http11_head import status_line
from tx_swoole.protocols._request import Headers, Request
from tx_swoole.protocols._response import IResponseChannel, Response, when_handled
from tx_swoole.protocols.body import StreamedBody, body_destination, streaming
from tx_swoole.protocols.h2 import PREFACE, H2Protocol
from tx_swoole.protocols.tcp import CONNECTION_DONE, ConnectionTable, TrackedProtocol, pending_bytes
from tx_swoole.settings import Settings
from tx_swoole.transport import send_file_now

__all__ = [
    "HTTPFactory", "HTTPProtocol", "Headers", "Request", "Response", "status_line", "streaming",
]  # fmt: skip
log = SwooleLogger("tx_swoole.http")

SERVER_NAME = b"tx_swoole"
DRAIN_IDLE_GRACE = 0.5  # seconds a just-answered connection may still send while draining
DRAIN_TICK = DRAIN_IDLE_GRACE / 2  # the drainer's period, and its clock's resolution then
COARSE = 1.0  # resolution of the factory's cached clock (its sweep interval)
FILE_CHUNK = 1 << 16  # bytes read from a file per write in sendfile()
BODY_READ_SIZE = 1 << 18  # bytes read at once once a streamed body (an upload) begins
_new = object.__new__


@implementer(IHalfCloseableProtocol, IPushProducer, IResponseChannel)
class HTTPProtocol(TrackedProtocol):
    """One HTTP/1.x connection: the core decides, this glue dispatches.

    It is the transport's push producer: the transport pauses it when its buffer fills (the
    client is not reading), and the glue pauses reading and the core once the unsent bytes
    pass ``buffer_output_size``.

    Resource handling and error handling: see the module docstring.
    """

    __slots__ = (
        "conn", "_request", "_inHandle", "_later", "_readPaused", "transportPaused",
        "_drainWaiters", "_file", "_registered", "_inBody",
    )  # fmt: skip
    server: HTTPFactory  # (annotations only: the slots are TrackedProtocol's)
    factory: HTTPFactory

    def __init__(self) -> None:
        self._registered = 0.0
        super().__init__()
        #: The sans-IO core (an HTTPConnection) once connected.
        self.conn: Any = None
        self._request: Request | None = None  # the request whose head came last
        self._inHandle = False
        self._later: list[Any] | None = None  # events that came while _handle was looping
        self._readPaused = False
        self.transportPaused = False
        self._inBody: StreamedBody | None = None  # a streamed request's body on its way
        self._drainWaiters: list[defer.Deferred[None]] | None = None
        self._file: Any = (
            None  # (file, Deferred, bytes left or -1, encoder) while sendfile() streams
        )

    def connectionMade(self) -> None:
        server = self.server
        s = server.settings
        self.conn = HTTPConnection(
            s.http_header_max_length, s.package_max_length, request_class=Request,
            now=server.now, timeouts=server.httpTimeouts,
        )  # fmt: skip
        self.conn.stream_if = self._streamIf
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        events = conn.receive(data, self.server.now)
        if conn.lone:
            # The common case: one whole request and nothing held behind it, or before it (no
            # body on its way), so nothing for _handle's loop to do after.
            self._serve(events[0])
        elif events:
            self._handle(events)
        if conn.held:  # (while reading is paused, no data arrives)
            self._updateReading()

    def readConnectionLost(self) -> None:
        """The client half-closed: answer what it asked, then close."""
        if self._inBody is not None:  # a body that can never complete
            body, self._inBody = self._inBody, None
            if not body.lost(Failure(ConnectionDone("the client half-closed mid-body"))):
                self.conn.stop()
                self._loseConnection("client")
                return
        self._handle(self.conn.receive_eof(self.server.now))

    def writeConnectionLost(self) -> None:
        """Our half-close completed; the lingering close goes on."""

    def _handle(self, events: list[Any] | None) -> None:
        """Act on the core's events in order; events that arrive meanwhile (a handler ended
        its response, the worker began draining) wait for the loop instead of nesting."""
        if self._inHandle:
            if events:
                self._later = [*self._later, *events] if self._later else events
            return
        self._inHandle = True
        conn = self.conn
        try:
            while events:
                for event in events:
                    if event is END:
                        if self._inBody is not None:
                            body, self._inBody = self._inBody, None
                            if getattr(self.transport, "bufferSize", 0) == BODY_READ_SIZE:
                                self.transport.bufferSize = 65536  # type: ignore[attr-defined]
                            body.end()
                        else:
                            self._serve(self._request)  # type: ignore[arg-type]
                    elif event.__class__ is Request:
                        self._request = event
                        if event.streamed:
                            self._inBody = self._startBody(event)
                    elif event.__class__ is bytes:
                        if self._inBody is not None:
                            self._inBody.piece(event)
                    else:
                        self._special(event)
                events, self._later = self._later, None
                if not events and conn.held:
                    events = conn.next_events()
        finally:
            self._inHandle = False

    def _startBody(self, request: Request) -> StreamedBody:
        transport = self.transport
        if getattr(transport, "bufferSize", 0) == 65536:  # a TCP socket's: read more at once
            transport.bufferSize = BODY_READ_SIZE  # type: ignore[attr-defined]
        return StreamedBody(request, Response(self, request), self._serve, self._pauseInput,
                            self._refuse, self.server.settings)  # fmt: skip

    def _streamIf(self, request: Request) -> str:
        """Asked by the core of a request with a body: stream it (to the handler that
        wants it, or a multipart upload to disk) rather than collect it."""
        return body_destination(self.server.streamsBody, request)

    def _pauseInput(self, paused: bool) -> None:
        conn = self.conn
        if paused:
            conn.input_paused = True
        else:
            conn.resume_input(self.server.now)
        self._updateReading()

    def tlsHandshakeDone(self, alpn: str | None) -> None:
        """The TLS transport's call once its handshake is done: ALPN ``h2`` is HTTP/2."""
        if alpn == "h2" and self.server.settings.open_http2_protocol:
            self._switchToHTTP2(b"")

    def _switchToHTTP2(self, data: bytes) -> None:
        self._handOver(H2Protocol(), data)

    def _special(self, event: Any) -> None:
        cls = event.__class__
        if cls is Send:
            self._send(event.data)
        elif (
            cls is Refused
            and event.error.__class__ is HTTP2PrefaceError
            and (
                self.server.settings.open_http2_protocol
                and self.conn.upgrade_data[:6] == b"SM\r\n\r\n"
            )
        ):
            self._switchToHTTP2(PREFACE + self.conn.upgrade_data[6:])
        elif cls is Refused:
            if self._inBody is not None:  # a body on its way: maybe the handler answers
                body, self._inBody = self._inBody, None
                if not body.refused(event.error):
                    self._closeReason = "error"
                    self.abort("error")
                    return
            self._refuse(event.error)
        elif event is CLOSE:
            self._loseConnection(self._closeReason or "server")
        elif event is LINGER:
            self._closeReason = self._closeReason or "reload"
            self._halfClose()
        elif event is ABORT:
            log.info(
                "connection {connId}: client read nothing of {unsent} unsent bytes for "
                "http_send_timeout={t}s; aborted",
                connId=self.connId, unsent=pending_bytes(self.transport),
                t=self.server.settings.http_send_timeout,
            )  # fmt: skip
            if self.connected:  # even when closing already (lingering): that is what ends
                self._closeReason = self._closeReason or "server"
                self._reset()

    def _send(self, data: bytes) -> None:
        if data:
            self.transport.write(data)

    def switchProtocol(self, response: Response, head: bytes, protocol: TrackedProtocol) -> None:
        """Answer ``response``'s request (an upgrade) with ``head`` and hand the connection
        to ``protocol``: same transport, same id in the table; the bytes that followed the
        request go to it.  This protocol then does nothing more."""
        response.started = response.ended = True
        response.request.owner = protocol  # (remote_addr and friends; and this one can go)
        self._send(head)
        self.conn.bytes_out += len(head)
        self._handOver(protocol, self.conn.upgrade_data)

    def _handOver(self, protocol: TrackedProtocol, data: bytes) -> None:
        """``protocol`` takes the connection (same transport, same id in the table) and is
        given ``data``, the bytes that came after what this protocol read."""
        transport = self.transport
        transport.unregisterProducer()
        self.server.replace(self, protocol)
        self.connected = 0
        self._closeReason = "server"
        transport.protocol = protocol  # type: ignore[attr-defined]
        protocol.transport = transport
        protocol.connected = 1
        protocol.connectionMade()
        if data and protocol.connected:
            protocol.dataReceived(data)

    def byteCounts(self) -> tuple[int, int]:
        """Bytes received and bytes of responses sent (the core counts them)."""
        conn = self.conn
        return (conn.bytes_in, conn.bytes_out) if conn is not None else (0, 0)

    # The core knows when bytes last arrived; the connection table's stamp (set when the
    # connection is registered) counts until then.
    def _lastRecv(self) -> float:
        conn = self.conn
        return self._registered if conn is None else max(self._registered, conn.last_receive)

    def _setRegistered(self, when: float) -> None:
        self._registered = when

    lastRecvTime = property(_lastRecv, _setRegistered)

    # -- serving ----------------------------------------------------------------------------
    def _serve(self, request: Request, response: Response | None = None) -> Any:
        """Call the handler with ``request`` (and a new response unless given); returns
        None once it is done, or a Deferred that fires when it is."""
        server = self.server
        server.requestCount += 1
        if server.maxRequestReached is not None:
            server.maxRequestReached()
        request.owner = self
        if response is None:
            response = _new(Response)  # Response(self, request) without type.__call__'s frame
            response.__init__(self, request)  # type: ignore[misc]
        try:
            handler = server.handler  # (an attribute: LOAD_METHOD on it would not specialize)
            result = handler(request, response)
        except Exception:
            self._handlerFailed(response, Failure())
            return None
        if result is None:
            if not response.ended:
                response.end()
            return None
        return self._handlerReturned(response, result)

    def _handlerReturned(self, response: Response, result: Any) -> Any:
        # (apart from _serve: a closure there would make its locals cells on the hot path)
        return when_handled(response, result, lambda f: self._handlerFailed(response, f))

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
        response.reset()
        response.status(500)
        response.end(b"<h1>500 Internal Server Error</h1>")

    # -- writing (called by Response) ---------------------------------------------------------

    def streamBody(self, head: bytes, data: bytes) -> bool:
        """Send ``head`` (when the response starts) and ``data``; False once output is over
        the limit."""
        if head:
            self._send(head)
        self._send(self.conn.data(data))
        return bool(self.connected) and not self._overLimit()

    def endBody(self, tail: bytes) -> None:
        """End a streamed response with ``tail``."""
        conn = self.conn
        self._send(conn.data(tail))
        self._send(conn.end(self.server.now))
        self.responseEnded()

    def sendFile(
        self, f: IO[bytes], length: int | None = None, encoder: Encoder | None = None
    ) -> defer.Deferred[None]:
        """Stream the open file ``f`` (``length`` bytes from where it is, or to its end) as
        the body (head already sent), through ``encoder`` if given, as the client reads;
        nothing is read for HEAD."""
        d: defer.Deferred[None] = defer.Deferred()
        if not self.connected:
            f.close()
            d.callback(None)
            return d
        left = 0 if self.conn.head_only else -1 if length is None else length
        self._file = (f, d, left, encoder)
        self._sendFileChunks()
        return d

    def _sendFileChunks(self) -> None:
        f, d, left, encoder = self._file
        if left > 0 and encoder is None:  # a length-framed body: sendfile(2) while it can
            conn = self.conn
            while left > 0 and self.connected:
                sent = send_file_now(self.transport, f.fileno(), min(left, 1 << 30))
                if sent <= 0:
                    if not sent:
                        self._file = (f, d, left, encoder)
                        return  # the socket is full: resumeProducing brings us back
                    break  # write it instead
                left -= sent
                conn.bytes_out += sent
            self._file = (f, d, left, encoder)
        while not self.transportPaused and self.connected:
            chunk = f.read(FILE_CHUNK if left < 0 else min(FILE_CHUNK, left)) if left else b""
            if not chunk and left > 0:  # the file is shorter than announced
                log.warn("connection {connId}: file {name} ended {left} bytes early; aborted",
                         connId=self.connId, name=getattr(f, "name", "?"), left=left)  # fmt: skip
                self._file = None
                f.close()
                d.callback(None)
                self.abort("error")
                return
            if not chunk:
                self._file = None
                f.close()
                self.endBody(encoder.finish() if encoder is not None else b"")
                d.callback(None)
                return
            if left > 0:
                left -= len(chunk)
                self._file = (f, d, left, encoder)
            self._send(self.conn.data(encoder.chunk(chunk) if encoder is not None else chunk))

    def _overLimit(self) -> bool:
        if self.transportPaused and pending_bytes(self.transport) > self.server.bufferOutputSize:
            if not self.conn.output_paused:
                self.conn.pause_output()
                self._updateReading()
            return True
        return False

    def whenDrained(self) -> defer.Deferred[None]:
        """A Deferred that fires when the output is under ``buffer_output_size`` again."""
        d: defer.Deferred[None] = defer.Deferred()
        if not self.conn.output_paused or not self.connected:
            d.callback(None)
        else:
            if self._drainWaiters is None:
                self._drainWaiters = []
            self._drainWaiters.append(d)
        return d

    def responseEnded(self) -> None:
        """After a response ended: close, or serve what is held."""
        self._overLimit()
        writing = self.conn.writing
        if writing is IDLE:
            if self.conn.held:
                self._handle(self.conn.next_events())
                self._updateReading()
        elif writing is LINGERING:
            self._closeReason = self._closeReason or "server"
            self._halfClose()
        elif writing is CLOSED:
            self._loseConnection(self._closeReason or "server")

    # -- flow control: the transport's producer, and our reading ------------------------------
    def pauseProducing(self) -> None:
        """The transport's buffer is full: stop sending files; check the output limit."""
        self.transportPaused = True
        self._overLimit()

    def resumeProducing(self) -> None:
        """The transport sent everything: serve held requests and resume reading."""
        self.transportPaused = False
        if self._file is not None:
            self._sendFileChunks()
        conn = self.conn
        if conn.output_paused:
            waiters, self._drainWaiters = self._drainWaiters or (), None
            self._handle(conn.resume_output())
            for d in waiters:
                d.callback(None)
            self._updateReading()

    def stopProducing(self) -> None:
        """The transport is gone; connectionLost follows."""

    def _updateReading(self) -> None:
        paused = self.conn.reading_paused and bool(self.connected)
        if paused != self._readPaused:
            self._readPaused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- errors and closing ---------------------------------------------------------------------
    def _refuse(self, error: HTTPRequestError) -> None:
        peer = self.transport.getPeer()
        log.warn(
            "{status} for {peer}: {message}",
            status=error.status, peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            message=error.message,
        )  # fmt: skip
        self._closeReason = "limit" if error.status in (413, 431) else "error"
        self._send(self.conn.refusal(error, self.server.defaultHeaders, self.server.now))
        self.responseEnded()

    def _releaseTransport(self) -> None:
        # Twisted resumes a paused producer instead of finishing a close: let go first.
        if getattr(self.transport, "producer", None) is self:
            self.transport.unregisterProducer()
        if self._readPaused:
            self._readPaused = False
            self.transport.resumeProducing()

    def _halfClose(self) -> None:
        """Half-close, then linger: pipelined bytes the client already sent must not turn
        our FIN into a reset before it has read the response."""
        self._releaseTransport()
        self.transport.loseWriteConnection()

    def _loseConnection(self, reason: str) -> None:
        if self.connected:
            if self._closeReason is None:
                self._closeReason = reason
            self._releaseTransport()
            self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        if self.conn is not None:
            self.conn.stop()
        super().abort(reason)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        conn = self.conn
        if conn is not None:
            conn.stop()
        if self._inBody is not None:
            body, self._inBody = self._inBody, None
            body.lost(reason)
        if self._file is not None:
            f, d, _, _ = self._file
            self._file = None
            f.close()
            d.errback(reason)
        waiters, self._drainWaiters = self._drainWaiters or (), None
        super().connectionLost(reason)
        for d in waiters:
            d.callback(None)

    # -- timeouts and draining ------------------------------------------------------------------
    def idleExpired(self, now: float) -> bool:
        """Hand the core the time; it decides (keep-alive, head, body, send, linger)."""
        events = self.conn.check(now, pending_bytes(self.transport))
        if events:
            self._handle(events)
        return False

    def drainRequested(self) -> None:
        """Close if idle; otherwise the response in progress says Connection: close.

        A connection answered less than ``DRAIN_IDLE_GRACE`` ago is left that long to send
        its next request (answered with Connection: close): closing it at once would race a
        request already on the wire, which the client would see as a dropped request.
        """
        conn = self.conn
        if conn is not None:
            conn.start_draining()
            # Idle stamps come from the factory's clock, refreshed every DRAIN_TICK while
            # draining: so a connection idle for DRAIN_IDLE_GRACE + DRAIN_TICK by that clock
            # has surely been idle for DRAIN_IDLE_GRACE.
            self._handle(conn.drain(self.server.seconds(), DRAIN_IDLE_GRACE + DRAIN_TICK))

    def describeState(self) -> str:
        return self.conn.state.value if self.conn is not None else "opening"


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
        reactor: IReactorTime | None = None,
        server_name: bytes = SERVER_NAME,
    ) -> None:
        super().__init__(HTTPProtocol, settings, reactor=reactor)
        self.handler = handler
        self.serverName = server_name
        self.now = self.seconds()
        self.defaultHeaders = _default_headers(server_name, self.now)
        s = self.settings
        self.httpTimeouts = (
            s.http_keepalive_timeout, s.http_header_timeout, s.http_body_timeout,
            s.http_send_timeout,
        )  # fmt: skip
        self._drainer: task.LoopingCall | None = None
        # bodies of this many bytes or more are compressed when the client takes it (0: off)
        self.compressMin = max(s.http_compression_min_length, 1) if s.http_compression else 0
        self.compressLevel = s.http_compression_level
        self.compressTypes = s.http_compression_types or DEFAULT_TYPES
        self.compressPlans: dict[tuple[Any, ...], int] = {}  # by the handler's headers
        # the handler's streams_body(request) (see streaming()): its body comes as it arrives
        self.streamsBody = getattr(handler, "streams_body", None)

    def startDraining(self) -> None:
        """Refuse new connections; close idle ones now and the others as they go idle.

        Idle times are stamped with the coarse clock (up to ``COARSE`` s behind): a connection
        not surely idle for DRAIN_IDLE_GRACE gets the full grace from now.
        """
        now = self.seconds()
        for p in self.connections.values():
            conn = p.conn if isinstance(p, HTTPProtocol) else None
            if conn is not None and now - conn.idle_since < COARSE + DRAIN_IDLE_GRACE:
                conn.refresh_idle(now)
        super().startDraining()
        self._drainer = task.LoopingCall(self._closeIdle)
        self._drainer.clock = self.reactor
        self._drainer.start(DRAIN_TICK, now=False)

    def _closeIdle(self) -> None:
        self.now = self.seconds()
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
