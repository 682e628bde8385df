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

Limits are checked before memory is spent:

- request line + headers over ``header_max`` bytes → 431; the size counted is that of the
  canonical head (``METHOD SP URL SP HTTP/x.y CRLF``, each ``Name: value CRLF``, the final
  CRLF), and every byte of a read that continues an open head counts, so a never-ending head
  is refused once it passes the limit.  A read of at most 4/5 of ``header_max`` cannot hold a
  head over the limit (a canonical header line is at most one byte longer than the shortest
  raw one, ``Name:value CRLF``, which is at least 4 bytes), so heads inside such a read are
  measured only if still open at its end;
- trailer fields of a chunked body count against ``header_max`` of their own (431), and so
  does every run of reads that brings no body byte (a never-ending chunk extension or trailer
  value); all chunk framing together may not exceed the body it carries plus ``header_max``
  (400: many tiny chunks cost a callback each);
- a declared ``Content-Length`` over ``body_max`` → 413 as soon as the head is complete;
  chunked bodies are counted as they arrive;
- llhttp's refusals (bad request line, invalid header bytes, bad chunk sizes, both
  Content-Length and Transfer-Encoding, repeated Content-Length), CONNECT, and
  ``Transfer-Encoding`` in an HTTP/1.0 request (RFC 9112 §6.1) → 400; HTTP/0.9, 2.0 and other
  versions → 505.

Trailer fields are kept apart from the headers (``ParsedRequest.trailers``).  No Twisted
import here.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Any

import httptools

from tx_swoole.errors import (
    BodyTooLargeError,
    HeaderTooLargeError,
    HTTPRequestError,
    HTTPVersionError,
    MalformedRequestError,
    RequestTimeoutError,
)
from tx_swoole.protocols._http11_head import (
    _BLOCKS,
    _LENGTH_LINES,
    DEFAULT_CONTENT_TYPE,
    WANTS_CLOSE,
    header_block,
    length_line,
    status_line,
)

__all__ = [
    "ABORT", "CLOSE", "END", "LINGER", "HTTPConnection", "ParsedRequest", "Refused", "Send",
    "State",
]  # fmt: skip

_SAMPLE = 40  # bytes of peer data quoted in error messages, at most
# Header names that need a look when the head completes, by length -> first letter, lower
# case: Content-Length, Expect, Upgrade, Connection, Transfer-Encoding.  A match only
# triggers the exact check.
_SPECIAL = {14: ord("c"), 6: ord("e"), 7: ord("u"), 10: ord("c"), 17: ord("t")}
MAX_PIPELINE = 32  # requests held behind the one being answered before reading pauses
LINGER_TIME = 2.0  # seconds to drain a client's input after a closing response (nginx: 5)
LINGER_BYTES = 1 << 20  # ... or until this many bytes were discarded
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_HEADERS = (DEFAULT_CONTENT_TYPE, 0)


class State(Enum):
    """Where one side of the connection is (see :attr:`HTTPConnection.state`)."""

    IDLE = "idle"  # between requests
    HEAD = "head"  # bytes of a request head are arriving
    BODY = "body"  # a request body is arriving
    HANDLING = "handling"  # a complete request waits for its response
    STREAMING = "streaming"  # the response head was sent, its body is being written
    LINGERING = "lingering"  # a closing response was sent; input is discarded until close
    CLOSED = "closed"


IDLE, HEAD, BODY, HANDLING = State.IDLE, State.HEAD, State.BODY, State.HANDLING
STREAMING, LINGERING, CLOSED = State.STREAMING, State.LINGERING, State.CLOSED


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


END = _Marker("END")  # event: the request whose head came last is complete
LINGER = _Marker("LINGER")  # event: half-close and discard input until the linger ends
CLOSE = _Marker("CLOSE")  # event: close the connection (flushing output)
ABORT = _Marker("ABORT")  # event: abort the connection (RST, output dropped)


class Send:
    """Event: write ``data`` as it is (``100 Continue``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Refused:
    """Event: the next request cannot be served; ``error`` says why (its ``status``)."""

    __slots__ = ("error",)

    def __init__(self, error: HTTPRequestError) -> None:
        self.error = error


class ParsedRequest:
    """One request as the core parsed it: method, URL, version, headers (and trailers,
    apart), ``keep_alive`` as HTTP/1.0 and 1.1 define it, ``body`` once complete.
    ``upgrade`` marks a request asking to switch protocols (answered, then closed).
    ``owner`` and ``cache`` are free for the code that serves it.
    """

    def __init__(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str = "1.1",
        keep_alive: bool = True,
    ) -> None:
        self.raw_method = method
        self.raw_url = url
        self.raw_headers = headers
        self.version = version
        self.keep_alive = keep_alive

    # Set on few requests, so defaults on the class until they are:
    body = b""
    trailers: list[tuple[bytes, bytes]] | tuple[()] = ()  # a list once a trailer arrived
    upgrade = False
    owner: Any = None
    cache: Any = None


class HTTPConnection:
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
        "_parser", "_header_max", "_body_max", "_fast_max", "_buffer_body", "_request_class",
        "_events", "held", "_held_ends", "_held_bytes", "_request", "_current", "_url",
        "_url_open", "_headers", "_head_size", "_head_pending", "_counting", "_special",
        "_body", "_body_size", "_chunked", "_framing", "_framing_run", "_body_in_read",
        "_trailer_size", "_discarded", "_now", "_idle_since", "_head_since", "_body_since",
        "_linger_since", "_sent_mark", "_send_since", "_keep", "_chunked_out", "_head_only",
        "_no_keep",
        "reading", "writing", "draining", "output_paused", "peer_closed", "bytes_out",
        "error", "timeouts",
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
        self._parser = httptools.HttpRequestParser(self)
        self._header_max = header_max
        self._body_max = body_max
        self._fast_max = header_max * 4 // 5  # see the module docstring
        self._buffer_body = buffer_body
        self._request_class = request_class
        self._events: list[Any] = []
        #: Events behind the request being answered, handed out by next_events().
        self.held: deque[Any] = deque()
        self._held_ends = 0  # complete requests among them
        self._held_bytes = 0  # bytes of their bodies
        self._request: Any = None  # the request being parsed
        self._current: Any = None  # the request being answered
        self._url = b""
        self._url_open = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = self._head_pending = 0
        self._counting = self._special = self._chunked = False
        self._body: list[bytes] = []
        self._body_size = self._framing = self._framing_run = self._body_in_read = 0
        self._trailer_size = 0
        self._discarded = 0
        self._now = self._idle_since = self._body_since = self._send_since = now
        self._head_since = self._linger_since = now
        self._sent_mark = 0
        self._keep = True
        self._chunked_out = self._head_only = False
        #: Their side: IDLE, HEAD, BODY or CLOSED (half-closed, upgraded, refused).
        self.reading = IDLE
        #: Our side: IDLE, HANDLING, STREAMING, LINGERING or CLOSED.
        self.writing = IDLE
        #: Set by start_draining(): responses from now on close.
        self.draining = False
        self._no_keep = False  # draining or peer_closed: look closer before keeping alive
        #: Set with pause_output(): the client is not reading; nothing more is handed out.
        self.output_paused = False
        #: The peer half-closed: finish what it asked, then close.
        self.peer_closed = False
        #: Bytes of responses handed back so far.
        self.bytes_out = 0
        #: The reason the connection was refused, once it was.
        self.error: HTTPRequestError | None = None
        #: (keep-alive, head, body, send) timeouts in seconds; 0 = off.
        self.timeouts = timeouts

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
        )

    # -- their side ----------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[Any]:
        """Parse ``data`` (received at ``now``); return the events whose turn has come."""
        if self.reading is not IDLE:
            return self._receive_more(data, now)
        self.reading = HEAD  # the first byte of a request starts its head timeout
        self._now = self._head_since = now
        self._counting = len(data) > self._fast_max
        events = self._events
        try:
            self._parser.feed_data(data)
        except Exception as e:
            self._feed_failed(e, data)
        else:
            if self._url_open:  # a head is still open (perhaps behind a complete request)
                self.reading = HEAD
                self._measure_open_head()
        self._events = []
        if len(events) == 2 and events[1] is END and self.writing is IDLE and not self.held:
            if not self.output_paused:  # the common case: one whole request, nothing waits
                self.writing = HANDLING
                return events
        return self._release(events)

    def _receive_more(self, data: bytes, now: float) -> list[Any]:
        # A read that continues a head or a body, or comes after the reading ended.
        reading = self.reading
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
        self._now = now
        events = self._events
        try:
            self._parser.feed_data(data)
        except Exception as e:
            self._feed_failed(e, data)
        if self.error is None:
            if self.reading is HEAD:
                self._measure_open_head()
            elif reading is BODY and self.reading is BODY and self._chunked:
                self._count_framing(len(data))
        self._events = []
        return self._release(events)

    def _feed_failed(self, e: Exception, data: bytes) -> None:
        if isinstance(e, httptools.HttpParserUpgrade):
            self.reading = CLOSED  # what follows an upgrade request is not HTTP: dropped
        elif isinstance(e, httptools.HttpParserError):
            self._parse_failed(e, data)
        else:
            raise e

    def receive_eof(self, now: float) -> list[Any]:
        """The peer half-closed; return the events that follow (CLOSE when nothing is left
        to answer).  A request still incomplete is dropped: it can never be answered."""
        self._now = now
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
        held = self.held
        if self.writing is not IDLE or held or self.output_paused:
            for event in events:
                self._hold(event)
            return []
        try:
            end = events.index(END) + 1
        except ValueError:
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
        self.held.append(event)

    def next_events(self) -> list[Any]:
        """The held events whose turn has come (after a response ended, or output
        resumed)."""
        held = self.held
        if self.writing is not IDLE or self.output_paused or not held:
            return []
        out = []
        size = 0
        while held:
            event = held.popleft()
            out.append(event)
            if event is END:
                self._held_ends -= 1
                self.writing = HANDLING
                break
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

    def _refuse(self, error: HTTPRequestError) -> None:
        """Put ``error`` in the event stream and read nothing more."""
        if self.error is None:
            self.error = error
            self._events.append(Refused(error))
        self.reading = CLOSED
        self._request = None

    def _fail(self, error: HTTPRequestError) -> None:
        self._refuse(error)
        raise error  # stops llhttp; receive() sees that the error was recorded

    def _parse_failed(self, e: httptools.HttpParserError, data: bytes) -> None:
        cause = e.__context__
        if isinstance(e, httptools.HttpParserCallbackError):
            if isinstance(cause, HTTPRequestError):
                return  # _fail() recorded it
            assert cause is not None
            raise cause  # a fault of ours or of request_class, not of the peer's bytes
        self._refuse(MalformedRequestError(f"malformed request: {e} (data {data[:_SAMPLE]!r})"))

    def _measure_open_head(self) -> None:
        if not self._counting:  # this head began in an unmeasured read: measure it now
            self._head_size = (
                len(self._url) + sum(len(n) + len(v) + 4 for n, v in self._headers)
                if self._url_open
                else 0
            )
        size = max(self._head_pending, self._head_size)
        if size > self._header_max:
            self._refuse(HeaderTooLargeError(self._head_message(size)))

    def _count_framing(self, size: int) -> None:
        # A read that continued a chunked body and did not end it: what is not body is
        # framing (chunk sizes, extensions, CRLFs, trailers).
        framing = size - self._body_in_read
        self._framing += framing
        self._framing_run = framing + self._framing_run if not self._body_in_read else 0
        if self._framing_run + self._trailer_size > self._header_max:
            self._refuse(
                HeaderTooLargeError(
                    f"{self._framing_run + self._trailer_size} bytes of chunk extension or "
                    f"trailer fields exceed http_header_max_length={self._header_max}"
                )
            )
        elif self._framing > self._body_size + self._header_max:
            self._refuse(
                MalformedRequestError(
                    f"{self._framing} bytes of chunk framing for {self._body_size} bytes of "
                    f"body (more than the body plus http_header_max_length={self._header_max})"
                )
            )

    def _head_message(self, size: int) -> str:
        return (
            f"request line + headers of at least {size} bytes exceed "
            f"http_header_max_length={self._header_max}"
        )

    def _grow_head(self, size: int) -> None:
        size = self._head_size = self._head_size + size
        if size > self._header_max:
            self._fail(HeaderTooLargeError(self._head_message(size)))

    # -- llhttp callbacks: the hot path, one request at a time --------------------------------
    def on_url(self, url: bytes) -> None:
        # The first callback of each request (llhttp may split the URL over several reads).
        if self._url_open:
            self._url += url
            if self._counting:
                self._grow_head(len(url))
            return
        self._url_open = True
        self._url = url
        self._headers = []
        if self._counting:
            self._head_size = 0
            self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reading is BODY:
            self._trailer(name, value)
            return
        self._headers.append((name, value))
        if self._counting:
            self._grow_head(len(name) + len(value) + 4)
        if _SPECIAL.get(len(name)) == name[0] | 32:  # see _SPECIAL
            self._special = True

    def _trailer(self, name: bytes, value: bytes) -> None:
        self._trailer_size += len(name) + len(value) + 4
        if self._trailer_size > self._header_max:
            self._fail(
                HeaderTooLargeError(
                    f"trailer fields of at least {self._trailer_size} bytes exceed "
                    f"http_header_max_length={self._header_max}"
                )
            )
        request = self._request
        if not request.trailers:
            request.trailers = []
        request.trailers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        self._url_open = False
        if parser.should_keep_alive() and not self._special:
            # Only HTTP/1.1 keeps alive without a Connection header (llhttp accepts 0.9, 1.0,
            # 1.1 and 2.0; the others need "Connection: keep-alive"): no need to ask llhttp,
            # whose get_http_version() formats a string on every call.
            request = self._request = self._request_class(method, self._url, self._headers)
            self.reading = BODY
            if self._counting:
                self._head_pending = 0
                self._grow_head(len(method) + 14)  # SP URL SP HTTP/x.y CRLF ... CRLF
            if method == b"CONNECT":
                self._fail(MalformedRequestError("CONNECT (tunnelling) is not supported"))
            self._events.append(request)
            return
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                self._fail(HTTPVersionError(f"HTTP/{version} is not supported (1.0 and 1.1 are)"))
            request = self._request = self._request_class(
                method, self._url, self._headers, version, parser.should_keep_alive()
            )
        self.reading = BODY
        if self._counting:
            self._head_pending = 0
            self._grow_head(len(method) + 14)  # SP URL SP HTTP/x.y CRLF ... CRLF
        if method == b"CONNECT":
            self._fail(MalformedRequestError("CONNECT (tunnelling) is not supported"))
        if self._special:
            self._special = False
            if self._check_special(request):
                self._events.append(request)  # the head, then 100 Continue in its turn
                self._events.append(Send(_CONTINUE))
                return
        self._events.append(request)

    def _check_special(self, request: ParsedRequest) -> bool:
        """Checks the rarer headers; True when the client waits for 100 Continue."""
        declared: int | None = None
        expect = upgrade = False
        for name, value in request.raw_headers:
            n = len(name)
            if n == 14 and name.lower() == b"content-length":
                declared = int(value)  # llhttp has checked it is a number, and not repeated
            elif n == 6 and name.lower() == b"expect":
                expect = value.lower() == b"100-continue"
            elif n == 7 and name.lower() == b"upgrade":
                upgrade = True
            elif n == 17 and name.lower() == b"transfer-encoding":
                if request.version == "1.0":
                    self._fail(
                        MalformedRequestError(
                            "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 section 6.1)"
                        )
                    )
                self._chunked = True
        if declared is not None and declared > self._body_max:
            self._fail(
                BodyTooLargeError(
                    f"declared body of {declared} bytes exceeds package_max_length={self._body_max}"
                )
            )
        if upgrade and self._parser.should_upgrade():  # CONNECT was refused already
            request.upgrade = True
            request.keep_alive = False
        return expect and declared != 0

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        self._body_in_read += len(body)
        if self.writing is not IDLE:  # behind the request being answered: held
            self._held_bytes += len(body)
        if self._body_size > self._body_max:
            self._fail(
                BodyTooLargeError(
                    f"body of at least {self._body_size} bytes exceeds "
                    f"package_max_length={self._body_max}"
                )
            )
        if self._buffer_body:
            self._body.append(body)
        else:
            self._events.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        if self._body:
            body = self._body
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
        if self._body_size or self._chunked:
            self._body_size = self._body_in_read = self._framing = self._framing_run = 0
            self._chunked = False
            self._trailer_size = 0
        self.reading = IDLE
        self._events.append(END)

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
            block, flags = _BLOCKS.get(tuple(headers)) or header_block(headers)
        else:
            block, flags = _NO_HEADERS
        if (
            request.keep_alive
            and not flags & WANTS_CLOSE
            and (not self._no_keep or self._keep_alive_ok())
        ):
            tail = b"\r\n" if request.version == "1.1" else b"Connection: keep-alive\r\n\r\n"
            self.writing = IDLE
        else:
            tail = b"Connection: close\r\n\r\n"
            self._closing()
        length = _LENGTH_LINES.get(len(body)) or length_line(len(body))
        if request.raw_method == b"HEAD":
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
            framing = length_line(length)
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
            self._closing()
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
        self._closing()
        return data

    def _closing(self) -> None:
        self.held.clear()
        self._held_ends = self._held_bytes = 0
        self.reading = CLOSED
        self._request = None
        if self.peer_closed:
            self.writing = CLOSED
        else:
            self.writing = LINGERING
            self._discarded = 0
            self._linger_since = self._now

    def stop(self) -> None:
        """Read nothing more (the connection is being aborted or closed by the caller)."""
        self.reading = CLOSED
        self.writing = CLOSED
        self.held.clear()

    # -- time ----------------------------------------------------------------------------------
    def check(self, now: float, unsent: int) -> list[Any]:
        """The events that time brings at ``now``, with ``unsent`` bytes not yet taken by the
        client: a 408 for a head or body too slow, CLOSE for an idle keep-alive connection
        or a finished lingering close, ABORT for a client that stopped reading."""
        self._now = now
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
        if writing is not IDLE or self.held:
            return []
        reading = self.reading
        if reading is IDLE:
            if keepalive and now - self._idle_since > keepalive:
                self.stop()
                return [CLOSE]
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
                self._closing()
                return [LINGER]
        return []

    @property
    def idle_since(self) -> float:
        """When the last response ended (or the connection began)."""
        return self._idle_since

    def refresh_idle(self, now: float) -> None:
        """Count the connection as idle from ``now`` (a drain's grace starts afresh)."""
        self._idle_since = now
