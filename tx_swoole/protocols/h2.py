"""HTTP/2 (``open_http2_protocol``) around the ``h2`` library: the same handlers, the same
:class:`~tx_swoole.protocols.http.Request` and :class:`~tx_swoole.protocols.http.Response`.

A connection becomes HTTP/2 by ALPN (``h2`` over TLS) or by prior knowledge (an ``h2c``
client's connection preface on a plain port); the HTTP/1.1 protocol hands it over.  Streams
are multiplexed: each request is answered through an
:class:`~tx_swoole.protocols.h2_stream.H2Stream`, the response channel of one stream, so
``write()``, ``end()``, ``sendfile()``, compression and backpressure are the HTTP/1.1 ones.
Flow control is honoured both ways: what a client's window does not take waits (``write()``
returns False past ``buffer_output_size``), and a body the handler streams is acknowledged
only as the handler reads it.

Limits: ``http2_max_concurrent_streams`` (more streams are refused by h2),
``http_header_max_length`` (the header list, HPACK-decoded: an HPACK bomb fails the
connection), ``package_max_length`` per stream (413), CONTINUATION frames (h2 keeps at most 64
of one header block); rapid resets (CVE-2023-44487), SETTINGS and PING floods close the
connection with ENHANCE_YOUR_CALM; a stream whose client window stays shut for
``http_send_timeout`` seconds is reset; an idle connection closes after
``http_keepalive_timeout``, with GOAWAY.
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import BodyTooLargeError, HTTPRequestError, RequestTimeoutError
from tx_swoole.protocols._hpack import StatelessEncoder
from tx_swoole.protocols._request import Request
from tx_swoole.protocols._response import Response, when_handled
from tx_swoole.protocols.body import StreamedBody, body_destination
from tx_swoole.protocols.h2_stream import H2Stream
from tx_swoole.protocols.tcp import CONNECTION_DONE, TrackedProtocol

__all__ = ["PREFACE", "H2Protocol", "H2Stream"]  # (H2Stream: protocols/h2_stream.py)
log = SwooleLogger("tx_swoole.http2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RESET_BUDGET = 200  # client resets of unanswered streams per RESET_WINDOW before we go
CONTROL_BUDGET = 1000  # PINGs and SETTINGS per RESET_WINDOW
RESET_WINDOW = 10.0  # seconds


class H2Protocol(TrackedProtocol):
    """An HTTP/2 server connection (after ALPN ``h2`` or an h2c preface) in the server's
    connection table, serving the factory's handler."""

    server: Any  # the HTTPFactory that handed the connection over
    factory: Any

    def __init__(self) -> None:
        super().__init__()
        self.h2: H2Connection | None = None
        self.streams: dict[int, H2Stream] = {}
        self._resets = 0.0
        self._controls = 0.0
        self._windowStart = 0.0
        self._idleSince = 0.0
        self._lastStream = 0
        self._draining = False
        self._encoder = StatelessEncoder()
        self._receiving = False  # in dataReceived: one write for all it answers

    def connectionMade(self) -> None:
        server = self.server
        s = server.settings
        # outbound headers are ours (checked by header_block, lower-cased, encoded ahead)
        config = H2Configuration(client_side=False, header_encoding=None,
                                 validate_inbound_headers=True, validate_outbound_headers=False,
                                 normalize_outbound_headers=False)  # fmt: skip
        self.h2 = h2 = H2Connection(config=config)
        h2.encoder = self._encoder  # type: ignore[assignment]
        h2.local_settings.max_concurrent_streams = s.http2_max_concurrent_streams
        h2.local_settings.max_header_list_size = s.http_header_max_length
        h2.local_settings.acknowledge()
        h2.initiate_connection()
        h2.update_settings({
            SettingCodes.MAX_CONCURRENT_STREAMS: s.http2_max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: s.http_header_max_length,
        })  # fmt: skip
        self._idleSince = self._windowStart = server.seconds()
        self._flush()

    # -- receiving -----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        h2 = self.h2
        if h2 is None or self._closeReason is not None:
            return
        self.bytesIn += len(data)
        self.lastRecvTime = self.server.seconds()
        try:
            events = h2.receive_data(data)
        except ProtocolError as e:
            self._fail(f"HTTP/2 protocol error: {e}")
            return
        self._receiving = True
        try:
            self._events(events)
        finally:
            self._receiving = False
        self._flush()

    def _events(self, events: list[Any]) -> None:
        reset = {e.stream_id for e in events if isinstance(e, StreamReset)}
        event: Any
        for event in events:
            cls = event.__class__
            if cls is RequestReceived:
                self._request(event)
            elif cls is DataReceived:
                self._data(event)
            elif cls is StreamEnded:
                if event.stream_id not in reset:  # a stream reset in the same read: skipped
                    self._ended(event.stream_id)
            elif cls is StreamReset:
                self._streamReset(event.stream_id)
            elif cls is WindowUpdated:
                self._windowOpened(event.stream_id)
            elif cls is PingReceived or cls is RemoteSettingsChanged:
                self._controls += 1
                if self._controls > CONTROL_BUDGET:
                    self._calm("PING or SETTINGS flood")
            elif cls is ConnectionTerminated:
                self._goingAway()
            if self._closeReason is not None:
                return

    def _request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        self._lastStream = max(self._lastStream, sid)
        method, path, authority = b"GET", b"/", b""
        headers: list[tuple[bytes, bytes]] = []
        accept: list[bytes] = []
        for name, value in event.headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
            else:
                headers.append((name, value))
                if name == b"accept-encoding":
                    accept.append(value)
        if authority:
            headers.insert(0, (b"host", authority))
        request = Request(method, path, headers)
        request.version = "2"
        request.owner = self
        if accept:  # joined when repeated, as HTTP/1.1's parser does
            request.accept_encoding = b",".join(accept)
        stream = self.streams[sid] = H2Stream(self, sid, request)
        if event.stream_ended is not None:  # no body: served when StreamEnded comes
            return
        request.streamed = body_destination(self.server.streamsBody, request)
        if request.streamed:
            stream.streamedBody = StreamedBody(
                request, Response(stream, request), self._serveOn(stream),
                lambda paused: self._bodyPaused(stream, paused), lambda e: self._refuse(stream, e),
                self.server.settings,
            )  # fmt: skip

    def _serveOn(self, stream: H2Stream) -> Any:
        def serve(request: Request, response: Response | None = None) -> Any:
            return self._serve(stream, response)

        return serve

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        h2 = self.h2
        assert h2 is not None
        if stream is None or stream.done:
            h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        stream.bodySize += len(event.data)
        stream.lastData = self.lastRecvTime
        limit = self.server.settings.package_max_length
        if stream.bodySize > limit:
            h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            error = BodyTooLargeError(f"body of at least {stream.bodySize} bytes exceeds "
                                      f"package_max_length={limit}")  # fmt: skip
            body = stream.streamedBody
            if body is None or body.refused(error):
                self._refuse(stream, error)
            else:
                self.resetStream(stream, ErrorCodes.CANCEL)
            return
        body = stream.streamedBody
        if body is None:
            stream.body.append(event.data)
            h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if stream.holding:  # the handler lags: this waits in the window too
            stream.unacked += event.flow_controlled_length
        else:
            h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        body.piece(event.data)

    def _bodyPaused(self, stream: H2Stream, paused: bool) -> None:
        h2 = self.h2
        stream.holding = paused
        if not paused and stream.unacked and h2 is not None:
            n, stream.unacked = stream.unacked, 0
            if not stream.done:
                try:
                    h2.acknowledge_received_data(n, stream.streamId)
                except (StreamClosedError, ProtocolError):
                    pass
                self._flush()

    def _ended(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.done:
            return
        body = stream.streamedBody
        if body is not None:
            stream.streamedBody = None
            body.end()
            return
        request = stream.request
        if stream.body:
            request.body = b"".join(stream.body)
            stream.body = []
        self._serve(stream, None)

    def _serve(self, stream: H2Stream, response: Response | None) -> Any:
        """The handler for ``stream`` (as HTTP/1.1 serves it: counted, 500 on a failure)."""
        server = self.server
        server.requestCount += 1
        if server.maxRequestReached is not None:
            server.maxRequestReached()
        request = stream.request
        stream.served = True
        if response is None:
            response = Response(stream, request)
        try:
            result = server.handler(request, response)
        except Exception:
            self._failed(stream, response, Failure())
            return None
        if result is None:
            if not response.ended:
                response.end()
            return None
        return when_handled(response, result, lambda f: self._failed(stream, response, f))

    def _failed(self, stream: H2Stream, response: Response, failure: Failure) -> None:
        log.failure("handler failed on HTTP/2 connection {connId}; answering 500", failure,
                    connId=self.connId)  # fmt: skip
        if response.ended or not stream.connected:
            return
        if response.started:
            response.ended = True
            self.resetStream(stream, ErrorCodes.INTERNAL_ERROR)
            return
        response.reset()
        response.status(500)
        response.end(b"<h1>500 Internal Server Error</h1>")

    def _refuse(self, stream: H2Stream, error: HTTPRequestError) -> None:
        log.warn("{status} for HTTP/2 stream {sid} of {peer}: {message}", status=error.status,
                 sid=stream.streamId, peer=self._peer(), message=error.message)  # fmt: skip
        if stream.done or stream.started:
            self.resetStream(stream, ErrorCodes.CANCEL)
            return
        response = Response(stream, stream.request)
        response.status(error.status)
        response.header("Content-Type", "text/plain")
        response.end(b"%d %s\n" % (error.status, error.reason))
        if not stream.done:
            self.resetStream(stream, ErrorCodes.NO_ERROR)  # read no more of its body

    def _streamReset(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        if not stream.done:
            self._resets += 1
            if self._resets > RESET_BUDGET:
                self._calm("rapid stream resets")
        body = stream.streamedBody
        if body is not None:
            stream.streamedBody = None
            body.lost(Failure(ConnectionError("the client reset the stream")))
        stream.finished()

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"

    # -- sending -------------------------------------------------------------------------------
    def sendHeaders(self, stream: H2Stream, code: bytes, block: bytes, end: bool) -> None:
        """Send a response's HEADERS: ``block`` already HPACK-encoded (``code`` its
        status, which h2 looks at)."""
        h2 = self.h2
        if h2 is None or stream.done:
            return
        self._encoder.prepare(block)
        try:
            h2.send_headers(stream.streamId, [(b":status", code)], end_stream=end)
        except (StreamClosedError, ProtocolError):
            stream.finished()
            return
        if end:
            stream.finished()
        self._flush()

    def flushStream(self, stream: H2Stream) -> None:
        """Send what the windows (the stream's and the connection's) take of its queue; the
        stream ends once all of it went with its end."""
        h2 = self.h2
        if h2 is None or stream.done:
            return
        sid = stream.streamId
        queue = stream.queue
        try:
            while queue:
                window = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
                if window <= 0:
                    stream.blockedSince = stream.blockedSince or self.server.seconds()
                    break
                stream.blockedSince = 0.0
                chunk = queue[0]
                if len(chunk) > window:
                    queue[0] = chunk[window:]
                    chunk = chunk[:window]
                else:
                    queue.popleft()
                stream.queued -= len(chunk)
                last = not queue and stream.ending
                h2.send_data(sid, chunk, end_stream=last)
                stream.endSent = stream.endSent or last
            if not queue and stream.ending:
                if not stream.endSent:
                    h2.end_stream(sid)
                    stream.endSent = True
                self._flush()
                stream.finished()
                return
        except (StreamClosedError, ProtocolError):
            stream.finished()
            return
        self._flush()
        stream.sent()

    def _windowOpened(self, sid: int) -> None:
        targets = (
            [self.streams[sid]] if sid and sid in self.streams else list(self.streams.values())
        )
        for stream in targets:
            if stream.queue or stream.ending:
                self.flushStream(stream)

    def resetStream(self, stream: H2Stream, code: int) -> None:
        h2 = self.h2
        if h2 is not None and not stream.done:
            try:
                h2.reset_stream(stream.streamId, error_code=code)
            except (StreamClosedError, ProtocolError):
                pass
            self._flush()
        if not stream.done:
            stream.finished()

    def streamDone(self, stream: H2Stream) -> None:
        if self.streams.get(stream.streamId) is stream:
            del self.streams[stream.streamId]
        if not self.streams:
            self._idleSince = self.server.seconds()
            if self._draining:
                self._goodbye()

    def _flush(self) -> None:
        h2 = self.h2
        if h2 is None or not self.connected or self._receiving:
            return
        data = h2.data_to_send()
        if data:
            self.bytesOut += len(data)
            self.transport.write(data)

    # -- closing ---------------------------------------------------------------------------------
    def _calm(self, why: str) -> None:
        log.warn("HTTP/2 connection {connId} from {peer}: {why}; closed with ENHANCE_YOUR_CALM",
                 connId=self.connId, peer=self._peer(), why=why)  # fmt: skip
        h2 = self.h2
        if h2 is not None:
            h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
        self._end("limit")

    def _fail(self, why: str) -> None:
        log.info("HTTP/2 connection {connId} from {peer}: {why}", connId=self.connId,
                 peer=self._peer(), why=why)  # fmt: skip
        self._flush()  # h2's GOAWAY
        self._end("error")

    def _goingAway(self) -> None:
        self._flush()
        self._end("peer")

    def _end(self, reason: str) -> None:
        for stream in list(self.streams.values()):
            body = stream.streamedBody
            if body is not None:
                stream.streamedBody = None
                body.lost(Failure(ConnectionError("the HTTP/2 connection closed")))
            stream.finished()
        if self.connected and self._closeReason is None:
            self._closeReason = reason
            self.transport.loseConnection()

    def _goodbye(self) -> None:
        h2 = self.h2
        if h2 is not None and self.connected:
            h2.close_connection(last_stream_id=self._lastStream)
            self._flush()
        self._end("reload" if self._draining else "server")

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        for stream in list(self.streams.values()):
            body = stream.streamedBody
            if body is not None:
                stream.streamedBody = None
                body.lost(reason)
            stream.finished()
        self.h2 = None
        super().connectionLost(reason)

    def drainRequested(self) -> None:
        """Reload or shutdown: GOAWAY once the streams in progress are answered."""
        self._draining = True
        if not self.streams:
            self._goodbye()

    def describeState(self) -> str:
        return f"http2 ({len(self.streams)} streams)" if not self.closing else "closing"

    def idleExpired(self, now: float) -> bool:
        """Keep-alive, body and send timeouts, and the flood budgets' decay."""
        s = self.server.settings
        if now - self._windowStart >= RESET_WINDOW:
            self._windowStart, self._resets, self._controls = now, 0.0, 0.0
        if not self.streams:
            keepalive = s.http_keepalive_timeout
            if keepalive and now - max(self._idleSince, self.lastRecvTime) > keepalive:
                self._goodbye()
            return False
        for stream in list(self.streams.values()):
            if (
                stream.blockedSince
                and s.http_send_timeout
                and (now - stream.blockedSince > s.http_send_timeout)
            ):
                log.info("HTTP/2 stream {sid} of {peer}: the client's window stayed shut for "
                         "http_send_timeout={t}s; reset", sid=stream.streamId, peer=self._peer(),
                         t=s.http_send_timeout)  # fmt: skip
                self.resetStream(stream, ErrorCodes.CANCEL)
            elif (
                not stream.served
                and s.http_body_timeout
                and (now - stream.lastData > s.http_body_timeout)
            ):
                self._refuse(stream, RequestTimeoutError(
                    f"no request body byte for http_body_timeout={s.http_body_timeout}s"
                ))  # fmt: skip
        return False
