"""Sans-IO HTTP/1.1 server connection: a state machine in h11's shape, llhttp underneath.

:class:`HTTPConnection` holds everything one connection decides: what the peer's bytes mean
(:meth:`~HTTPConnection.receive` returns events), what goes back (:meth:`~HTTPConnection.respond`,
:meth:`~HTTPConnection.start_response`, :meth:`~HTTPConnection.data`,
:meth:`~HTTPConnection.end` return bytes), keep-alive and close (the request's version and
``Connection`` header, the handler's ``Connection: close``, the peer's half-close, the
``draining`` flag), 100-continue, the order of pipelined requests, output backpressure and
the timeouts (:meth:`~HTTPConnection.check`, with the time passed in: no clock inside).

Events, in the order they happen, each handed out only when its turn comes (the previous
response ended and output is not paused):

- a :class:`ParsedRequest` (the request head; its ``body`` is filled by the end of the
  request unless the connection was made with ``buffer_body=False``);
- ``bytes`` — a piece of the body (only with ``buffer_body=False``);
- :data:`END` — the request is complete: answer it;
- :class:`Send` — bytes to write as they are (``100 Continue``);
- :class:`Refused` — a request that cannot be served (431, 413, 400, 505, 408); answer with
  :meth:`~HTTPConnection.refusal`, which leaves the connection lingering;
- :data:`LINGER` — half-close now and discard input (a close decided while idle: draining);
- :data:`CLOSE` — close now, flushing output (idle keep-alive timeout, lingering done);
- :data:`ABORT` — abort now (the client has read nothing of what is unsent for
  ``send_timeout`` seconds).

The peer's bytes are parsed, under Swoole's limits, by the base class
:class:`~tx_swoole.protocols._http11_parse.RequestParser` (see its module for the limits).

No Twisted import here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tx_swoole.errors import HTTPRequestError, RequestTimeoutError
from tx_swoole.protocols._http11_head import (
    _BLOCKS,
    _LENGTH_LINES,
    DEFAULT_CONTENT_TYPE,
    WANTS_CLOSE,
    header_block,
    length_line,
    status_line,
)
from tx_swoole.protocols._http11_parse import (
    ABORT,
    BODY,
    CLOSE,
    CLOSED,
    END,
    HANDLING,
    HEAD,
    IDLE,
    LINGER,
    LINGERING,
    STREAMING,
    ParsedRequest,
    Refused,
    RequestParser,
    Send,
    State,
)  # fmt: skip

__all__ = [
    "ABORT", "BODY", "CLOSE", "CLOSED", "END", "HANDLING", "HEAD", "IDLE", "LINGER",
    "LINGERING", "LINGER_BYTES", "LINGER_TIME", "MAX_PIPELINE", "STREAMING", "HTTPConnection",
    "ParsedRequest", "Refused", "Send", "State",
]  # fmt: skip
MAX_PIPELINE = 32  # requests held behind the one being answered before reading pauses
LINGER_TIME = 2.0  # seconds to drain a client's input after a closing response (nginx: 5)
LINGER_BYTES = 1 << 20  # ... or until this many bytes were discarded
_NO_HEADERS = (DEFAULT_CONTENT_TYPE, 0)
# Bound once: a method called on an imported name compiles to LOAD_ATTR, which 3.11 does not
# specialize for a dict's methods (a bound method is made on every call).
_block_of = _BLOCKS.get
_length_of = _LENGTH_LINES.get
_NO_CONTENT = (b"204", b"304")


_ZERO_LENGTH = b"Content-Length: 0\r\n"


def _length(size: int, status: bytes) -> bytes:
    """The Content-Length line of a size not remembered yet.  Size 0 is never remembered
    (a remembered line skips this function): an empty 204 or 304 gets none, as it has no
    body (RFC 9110 8.6)."""
    if not size:
        return b"" if status[9:12] in _NO_CONTENT else _ZERO_LENGTH
    return length_line(size)


class HTTPConnection(RequestParser):
    """The state of one HTTP/1.x server connection; feed it bytes, ask it for bytes.

    ``header_max`` and ``body_max`` are ``http_header_max_length`` and ``package_max_length``.
    With ``buffer_body`` (the default) a request's body is collected on its ``body`` and no
    body events are handed out.  ``request_class`` is built for each request with
    :class:`ParsedRequest`'s arguments.

    Resource handling: one head (``header_max``), one body per request (``body_max``) and at
    most :data:`MAX_PIPELINE` requests (or ``body_max`` bytes of their bodies) held behind
    the one being answered; :attr:`reading_paused` says when the caller should stop reading.
    While lingering, at most :data:`LINGER_BYTES` are discarded.

    Error handling: bad input becomes a :class:`Refused` event in its place, after the
    requests before it; nothing of a refused request is handed out.  A fault of the caller
    (an exception from ``request_class``) is raised, never taken for the peer's.
    """

    __slots__ = (
        "held", "_held_ends", "_discarded", "_idle_since", "_head_since",
        "_body_since", "_linger_since", "_sent_mark", "_send_since", "_keep", "_chunked_out",
        "_head_only", "_no_keep", "writing", "draining", "output_paused", "peer_closed",
        "bytes_in", "bytes_out", "timeouts", "_streaming_in", "input_paused", "lone",
    )  # fmt: skip

    def __init__(
        self,
        header_max: int,
        body_max: int,
        *,
        buffer_body: bool = True,
        request_class: type[ParsedRequest] = ParsedRequest,
        now: float = 0.0,
        timeouts: tuple[float, float, float, float] = (60.0, 30.0, 60.0, 60.0),
    ) -> None:
        super().__init__(header_max, body_max, buffer_body, request_class)
        #: Events behind the request being answered, handed out by next_events().
        self.held: deque[Any] | tuple[()] = ()  # a deque of its own once something waits
        self._held_ends = 0  # complete requests among them
        self._discarded = 0
        self._idle_since = self._body_since = self._send_since = now
        self._head_since = self._linger_since = now
        self._sent_mark = 0
        self._keep = True
        self._chunked_out = self._head_only = False
        #: Our side: IDLE, HANDLING, STREAMING, LINGERING or CLOSED.
        self.writing = IDLE
        #: Set by start_draining(): responses from now on close.
        self.draining = False
        self._no_keep = False  # draining or peer_closed: look closer before keeping alive
        #: Set with pause_output(): the client is not reading; nothing more is handed out.
        self.output_paused = False
        #: The peer half-closed: finish what it asked, then close.
        self.peer_closed = False
        #: Bytes received and bytes of responses handed back so far.
        self.bytes_in = self.bytes_out = 0
        #: The last receive() handed out one whole request alone: its read held nothing
        #: else, nothing waits, and its events are just (request, END).
        self.lone = False
        #: (keep-alive, head, body, send) timeouts in seconds; 0 = off.
        self.timeouts = timeouts
        # A streamed request was handed out and its body is still arriving: its pieces and
        # END go out as they come, whatever our side does meanwhile.
        self._streaming_in = False
        #: Set by the caller while the consumer of a streamed body lags: reading pauses and
        #: the body timeout does not run (set it back with resume_input()).
        self.input_paused = False

    @property
    def state(self) -> State:
        """One word for the connection: our side's state while we answer or close, else
        theirs."""
        return self.reading if self.writing is IDLE else self.writing

    @property
    def reading_paused(self) -> bool:
        """True while the caller should not read: enough is held, or output is paused."""
        return (
            self.output_paused
            or self._held_ends >= MAX_PIPELINE
            or self._held_bytes > self._body_max
            or self.input_paused
        )

    def resume_input(self, now: float) -> None:
        """The consumer of a streamed body caught up: read again; the body timeout runs
        from ``now``."""
        self.input_paused = False
        self._body_since = now

    # -- their side ----------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[Any]:
        """Parse ``data`` (received at ``now``); return the events whose turn has come."""
        if self.reading is not IDLE:
            self.lone = False
            return self._receive_more(data, now)
        self.reading = HEAD  # the first byte of a request starts its head timeout
        self._head_since = now
        size = len(data)
        self.bytes_in += size
        if size > self._fast_max:  # (a compare that jumps: specialized for ints)
            self._counting = True
        else:
            self._counting = False
        events = self._events
        parser = self._parser
        if parser is None:  # given back while the connection rested
            parser = self._wake()
        try:
            parser.feed_data(data)
        except Exception as e:
            self._feed_failed(e, data)
        else:
            if self._url is not None:  # a head is still open (maybe behind a complete one)
                self.reading = HEAD
                self._measure_open_head()
        self._events = []
        if len(events) == 2 and events[1] is END and self.writing is IDLE and not self.held:
            if not self.output_paused:  # the common case: one whole request, nothing waits
                self.writing = HANDLING
                self.lone = True
                return events
        self.lone = False
        return self._release(events)

    def _receive_more(self, data: bytes, now: float) -> list[Any]:
        # A read that continues a head or a body, or comes after the reading ended.
        reading = self.reading
        self.bytes_in += len(data)
        if self.writing is LINGERING:
            return self._linger(len(data))
        if reading is CLOSED:
            return []
        self._body_since = now  # the body timeout runs from the last read of this request
        if reading is HEAD:  # all of data is head until the head completes
            self._counting = True
            self._head_pending += len(data)
        else:
            self._counting = len(data) > self._fast_max
            self._body_in_read = 0
        events = self._events
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]  # (not rested: not IDLE)
        except Exception as e:
            self._feed_failed(e, data)
        if self.error is None:
            if self._url is not None:  # a head is open (maybe behind a complete one)
                self.reading = HEAD
            if self.reading is HEAD:
                self._measure_open_head()
            elif reading is BODY and self.reading is BODY and self._chunked:
                self._count_framing(len(data))
        self._events = []
        return self._release(events)

    def receive_eof(self, now: float) -> list[Any]:
        """The peer half-closed; return the events that follow (CLOSE when nothing is left
        to answer).  A request still incomplete is dropped: it can never be answered."""
        self.peer_closed = self._no_keep = True
        if self.reading is not CLOSED:
            self.reading = CLOSED
            self._request = None
        if self.writing is LINGERING:
            return [CLOSE]
        if self.writing is IDLE and not self.held:
            self.writing = CLOSED
            return [CLOSE]
        return []

    def _release(self, events: list[Any]) -> list[Any]:
        if self._streaming_in:  # the rest of a streamed body first, as it comes
            for i, event in enumerate(events):
                if event is END or event.__class__ is Refused:
                    self._streaming_in = False
                    if i + 1 < len(events):
                        return [*events[: i + 1], *self._release(events[i + 1 :])]
                    break
            return events
        held = self.held
        if self.writing is not IDLE or held or self.output_paused:
            for event in events:
                self._hold(event)
            return []
        try:
            end = events.index(END) + 1
        except ValueError:
            end = 0
        if events and getattr(events[0], "streamed", False):  # its turn starts at the head
            self.writing = HANDLING
            if not end:
                self._streaming_in = True
                return events
        elif not end:
            return events
        if end < len(events):
            for event in events[end:]:
                self._hold(event)
            del events[end:]
        self.writing = HANDLING
        return events

    def _hold(self, event: Any) -> None:
        if event is END:
            self._held_ends += 1
        if not self.held:
            self.held = deque()
        self.held.append(event)

    def next_events(self) -> list[Any]:
        """The held events whose turn has come (after a response ended, or output
        resumed)."""
        held = self.held
        if self.writing is not IDLE or self.output_paused or not held:
            return []
        assert isinstance(held, deque)
        out = []
        size = 0
        while held:
            event = held.popleft()
            out.append(event)
            if event is END:
                self._held_ends -= 1
                self.writing = HANDLING
                self._streaming_in = False
                break
            if getattr(event, "streamed", False):  # the rest of its body follows as it comes
                self.writing = HANDLING
                self._streaming_in = True
            size += len(event) if event.__class__ is bytes else len(getattr(event, "body", b""))
        self._held_bytes = max(0, self._held_bytes - size) if self._held_ends else 0
        return out

    def start_draining(self) -> None:
        """The server drains: every response from now on says ``Connection: close``."""
        self.draining = self._no_keep = True

    def pause_output(self) -> None:
        """The client is not reading what was sent: hand out nothing more until
        :meth:`resume_output`."""
        self.output_paused = True

    def resume_output(self) -> list[Any]:
        """The client drained its output; return the events whose turn has come."""
        self.output_paused = False
        return self.next_events()

    def _linger(self, size: int) -> list[Any]:
        self._discarded += size
        return [CLOSE] if self._discarded > LINGER_BYTES else []

    # -- our side ------------------------------------------------------------------------------
    def _keep_alive(self, request: ParsedRequest, flags: int) -> bool:
        return request.keep_alive and not flags & WANTS_CLOSE and self._keep_alive_ok()

    def _keep_alive_ok(self) -> bool:
        # After the peer's half-close, the last request it sent is answered with close.
        return not self.draining and (not self.peer_closed or self._held_ends > 0)

    def respond(
        self, request: ParsedRequest, status: bytes, headers: tuple[Any, ...], body: bytes,
        server_headers: bytes, now: float,
    ) -> bytes:  # fmt: skip
        """The whole response to ``request`` (the one being answered); ends it.

        ``status`` is a status line, ``headers`` flat ``(name, value, ...)`` pairs,
        ``server_headers`` the lines every response carries (Server, Date).  Raises
        :class:`~tx_swoole.errors.HeaderValueError` for a bad header, before any state
        changes.
        """
        if headers:
            block, flags = _block_of(headers) or header_block(headers)
        else:
            block, flags = _NO_HEADERS
        if (
            request.keep_alive
            and flags < WANTS_CLOSE  # (WANTS_CLOSE is the highest flag: an int compare)
            and (not self._no_keep or self._keep_alive_ok())
        ):
            tail = b"\r\n" if request.version == "1.1" else b"Connection: keep-alive\r\n\r\n"
            self.writing = IDLE
        else:
            tail = b"Connection: close\r\n\r\n"
            self._closing(now)
        length = _length_of(len(body)) or _length(len(body), status)
        method = request.raw_method
        if len(method) == 4 and method == b"HEAD":  # (bytes == bytes is not specialized)
            body = b""
        data = b"".join((status, server_headers, block, length, tail, body))
        self.bytes_out += len(data)
        self._idle_since = now
        return data

    def start_response(
        self, request: ParsedRequest, status: bytes, headers: tuple[Any, ...],
        length: int | None, server_headers: bytes,
    ) -> bytes:  # fmt: skip
        """The head of a streamed response; ``length`` None: chunked for HTTP/1.1, else the
        body ends when the connection closes.  Raises
        :class:`~tx_swoole.errors.HeaderValueError` before any state changes."""
        block, flags = header_block(headers) if headers else _NO_HEADERS
        keep = self._keep_alive(request, flags)
        if length is not None:
            framing = _length(length, status)
        elif request.version == "1.1":
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing, keep = b"", False
        tail = (b"\r\n" if request.version == "1.1" else b"Connection: keep-alive\r\n\r\n") \
            if keep else b"Connection: close\r\n\r\n"  # fmt: skip
        self._keep = keep
        self._chunked_out = length is None and request.version == "1.1"
        self._head_only = request.raw_method == b"HEAD"
        self.writing = STREAMING
        data = b"".join((status, server_headers, block, framing, tail))
        self.bytes_out += len(data)
        return data

    @property
    def head_only(self) -> bool:
        """The response being written answers a HEAD request: it has no body."""
        return self._head_only

    def data(self, chunk: bytes) -> bytes:
        """A piece of the streamed body, framed (b"" for HEAD requests and empty pieces)."""
        if self._head_only or not chunk:
            return b""
        if self._chunked_out:
            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        self.bytes_out += len(chunk)
        return chunk

    def end(self, now: float) -> bytes:
        """The end of the streamed body (the last chunk for chunked bodies); ends the
        response."""
        data = b"0\r\n\r\n" if self._chunked_out and not self._head_only else b""
        self.bytes_out += len(data)
        if self._keep:
            self.writing = IDLE
        else:
            self._closing(now)
        self._idle_since = now
        return data

    def refusal(self, error: HTTPRequestError, server_headers: bytes, now: float) -> bytes:
        """The short ``Connection: close`` answer to ``error``; the connection lingers."""
        body = b"%d %s\n" % (error.status, error.reason)
        data = (
            status_line(error.status) + server_headers
            + b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )  # fmt: skip
        self.bytes_out += len(data)
        self._idle_since = now
        self._closing(now)
        return data

    def _closing(self, now: float) -> None:
        self.held = ()
        self._held_ends = self._held_bytes = 0
        self.reading = CLOSED
        self._request = None
        if self.peer_closed:
            self.writing = CLOSED
        else:
            self.writing = LINGERING
            self._discarded = 0
            self._linger_since = now

    def stop(self) -> None:
        """Read nothing more (the connection is being aborted or closed by the caller)."""
        self.reading = CLOSED
        self.writing = CLOSED
        self.held = ()

    # -- time ----------------------------------------------------------------------------------
    def check(self, now: float, unsent: int) -> list[Any]:
        """The events that time brings at ``now``, with ``unsent`` bytes not yet taken by the
        client: a 408 for a head or body too slow, CLOSE for an idle keep-alive connection
        or a finished lingering close, ABORT for a client that stopped reading."""
        keepalive, head, body, send = self.timeouts
        if unsent:
            sent = self.bytes_out - unsent
            if sent != self._sent_mark:
                self._sent_mark = sent
                self._send_since = now
            elif send and now - self._send_since > send:
                self.stop()
                return [ABORT]
            self._idle_since = now  # not idle while output is still going out
            if self.writing is LINGERING:
                self._linger_since = now
            return []
        self._sent_mark = self.bytes_out
        self._send_since = now
        writing = self.writing
        if writing is LINGERING:
            return [CLOSE] if now - self._linger_since >= LINGER_TIME else []
        if self._streaming_in and self.reading is BODY and not self.input_paused:
            if body and now - max(self._body_since, self._head_since) > body:
                self._refuse(RequestTimeoutError(
                    f"no request body byte for http_body_timeout={body}s"
                ))  # fmt: skip
                return self._release(self._take_events())
            return []
        if writing is not IDLE or self.held:
            return []
        reading = self.reading
        if reading is IDLE:
            if keepalive and now - self._idle_since > keepalive:
                self.stop()
                return [CLOSE]
            self.rest()
            return []
        if reading is HEAD and head and now - max(self._head_since, self._idle_since) > head:
            what = f"request head not complete within http_header_timeout={head}s"
        elif reading is BODY and body and now - max(self._body_since, self._head_since) > body:
            what = f"no request body byte for http_body_timeout={body}s"
        else:
            return []
        self._refuse(RequestTimeoutError(what))
        return self._release(self._take_events())

    def _take_events(self) -> list[Any]:
        events, self._events = self._events, []
        return events

    def drain(self, now: float, grace: float) -> list[Any]:
        """With :attr:`draining` set: LINGER if the connection has been idle ``grace``
        seconds (one answered less long ago may still have a request on the wire)."""
        if self.writing is IDLE and self.reading is IDLE and not self.held:
            if now - self._idle_since >= grace:  # idle_since may be up to a clock tick behind
                self._closing(now)
                return [LINGER]
        return []

    @property
    def last_receive(self) -> float:
        """When bytes last arrived (a head began, or a read continued a request)."""
        return max(self._head_since, self._body_since)

    @property
    def idle_since(self) -> float:
        """When the last response ended (or the connection began)."""
        return self._idle_since

    def refresh_idle(self, now: float) -> None:
        """Count the connection as idle from ``now`` (a drain's grace starts afresh)."""
        self._idle_since = now
