"""Sans-IO HTTP/1.1 request parsing with Swoole's limits, over httptools (llhttp).

:class:`RequestParser` is the half of the connection core that turns the peer's bytes into
events (:mod:`tx_swoole.protocols._http11` has the other half: which event's turn it is, the
responses, the timeouts).  It also defines the events and the states they share.

Limits are checked before memory is spent:

- request line + headers over ``header_max`` bytes → 431; the size counted is that of the
  canonical head (``METHOD SP URL SP HTTP/x.y CRLF``, each ``Name: value CRLF``, the final
  CRLF), and every byte of a read that continues an open head counts (blank lines before a
  request included), so a never-ending head is refused once it passes the limit.  A read of
  at most 4/5 of ``header_max`` cannot hold a head over the limit (a canonical header line is
  at most one byte longer than the shortest raw one, ``Name:value CRLF``, which is at least 4
  bytes), so heads inside such a read are measured only if still open at its end;
- trailer fields of a chunked body count against ``header_max`` of their own (431), and so
  does every run of reads that brings no body byte (a never-ending chunk extension or trailer
  value); all chunk framing together (trailer fields aside) may not exceed the body it
  carries plus ``header_max`` (400: many tiny chunks cost a callback each).  The read in
  which a chunked body starts or ends is not counted: at most one read (64 KiB) of slack per
  request;
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

from enum import Enum
from typing import Any

import httptools

from tx_swoole.errors import (
    BodyTooLargeError,
    HeaderTooLargeError,
    HTTP2PrefaceError,
    HTTPRequestError,
    HTTPVersionError,
    MalformedRequestError,
)
from tx_swoole.protocols._proxy import looks_like_header

__all__ = [
    "ABORT", "CLOSE", "END", "LINGER", "Marker", "ParsedRequest", "Refused", "RequestParser",
    "Send", "State",
]  # fmt: skip

_NOTHING: list[Any] = []  # shared and never appended to: the empty value of lazy lists
_new = object.__new__
_FRAMING_SLACK = 64  # bytes: the last-chunk line and the CRLFs around a trailer section
_SAMPLE = 40  # bytes of peer data quoted in error messages, at most
# Header names that need a look when the head completes, by length -> first letter, lower
# case: Content-Length, Expect, Upgrade, Connection, Transfer-Encoding, Accept-Encoding.  A
# match only triggers the exact check; Connection (llhttp reads it) only makes the version
# looked up; Accept-Encoding is kept for the response.
_SPECIAL = {14: ord("c"), 6: ord("e"), 7: ord("u"), 10: ord("c"), 17: ord("t"), 15: ord("a")}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PRI = b"PRI * HTTP/2.0\r\n\r\n"  # the HTTP/1-shaped start of HTTP/2's preface


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


class Marker:
    """A named event with no data (END, CLOSE, ...; the multipart parser's too)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


END = Marker("END")  # event: the request whose head came last is complete
LINGER = Marker("LINGER")  # event: half-close and discard input until the linger ends
CLOSE = Marker("CLOSE")  # event: close the connection (flushing output)
ABORT = Marker("ABORT")  # event: abort the connection (RST, output dropped)


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
    ) -> None:
        self.raw_method = method
        self.raw_url = url
        self.raw_headers = headers

    # The core sets version, keep_alive and accept_encoding on every request; the rest is
    # set on few requests.  So defaults on the class until set:
    version = "1.1"  # or "1.0"
    keep_alive = True
    body = b""
    trailers: list[tuple[bytes, bytes]] | tuple[()] = ()  # a list once a trailer arrived
    upgrade = False
    accept_encoding = b""  # the Accept-Encoding field's value (b"": none)
    streamed: Any = False  # its body comes in pieces (bytes events), not on .body: the
    # stream_if answer that said so
    owner: Any = None
    cache: Any = None


class RequestParser:
    """The peer's bytes → events, under the limits (see the module docstring).

    Subclassed by :class:`~tx_swoole.protocols._http11.HTTPConnection`, which feeds it and
    decides when each event's turn comes; the llhttp callbacks below append to ``_events``.
    """

    __slots__ = (
        "_parser", "_header_max", "_body_max", "_fast_max", "_buffer_body", "_request_class",
        "_plain_request", "_events", "_request", "_url", "_headers", "_head_size", "_head_pending",
        "_counting", "_special", "_rare", "_body", "_body_size", "_chunked", "_framing",
        "_framing_run", "_body_in_read", "_trailer_size", "_held_bytes", "reading", "error",
        "upgrade_data", "_accept", "stream_if", "_streamed",
    )  # fmt: skip

    writing: State  # our side's state, kept by the connection

    def __init__(
        self, header_max: int, body_max: int, buffer_body: bool, request_class: type[ParsedRequest]
    ) -> None:
        # llhttp's parser, made when the first byte comes and given back between requests
        # while the connection rests (see rest())
        self._parser: httptools.HttpRequestParser | None = None
        self._header_max = header_max
        self._body_max = body_max
        self._fast_max = header_max * 4 // 5  # see the module docstring
        self._buffer_body = buffer_body
        self._request_class = request_class
        # A request class with ParsedRequest's __init__: the common head sets its three
        # fields itself (a frame less per request)
        self._plain_request = request_class.__init__ is ParsedRequest.__init__
        self._events: list[Any] = []
        self._request: Any = None  # the request being parsed
        self._url: bytes | None = None  # the URL of a head in progress, else None
        self._headers: list[tuple[bytes, bytes]] = _NOTHING  # a list of its own per request
        self._head_size = self._head_pending = 0
        self._counting = self._special = self._rare = self._chunked = False
        self._accept = b""  # the head's Accept-Encoding (joined when repeated)
        #: Asked of each request with a body when its head completes: a true answer hands
        #: its body out in pieces (``bytes`` events) instead of collecting it, and is kept
        #: as ``request.streamed``.
        self.stream_if: Any = None
        self._streamed = False
        self._body: list[bytes] = _NOTHING  # a list of its own once a body arrives
        self._body_size = self._framing = self._framing_run = self._body_in_read = 0
        self._trailer_size = 0
        self._held_bytes = 0  # bytes of bodies behind the request being answered
        #: Their side: IDLE, HEAD, BODY or CLOSED (half-closed, upgraded, refused).
        self.reading = IDLE
        #: The reason the connection was refused, once it was.
        self.error: HTTPRequestError | None = None
        #: The bytes that followed an upgrade request in its read (the new protocol's).
        self.upgrade_data = b""

    def rest(self) -> None:
        """Between requests, give back llhttp's parser (about 850 B) and the last request's
        objects; the next byte to come makes a new parser (which costs less than a request's
        header callbacks).  An idle keep-alive connection keeps neither."""
        if self.reading is IDLE:
            self._parser = None
            self._request = None
            self._headers = _NOTHING

    def _wake(self) -> httptools.HttpRequestParser:
        """A new parser for the first request, or the first after a rest."""
        parser = self._parser = httptools.HttpRequestParser(self)
        return parser

    def _feed_failed(self, e: Exception, data: bytes) -> None:
        if isinstance(e, httptools.HttpParserUpgrade):
            request = self._request
            if request is not None and request.raw_method == b"CONNECT":
                del self._events[self._events.index(request) :]  # the head and its END
                self._refuse(MalformedRequestError("CONNECT (tunnelling) is not supported"))
            else:
                self.upgrade_data = data[e.args[0] :] if e.args else b""
            self.reading = CLOSED  # what follows an upgrade request is not HTTP
        elif isinstance(e, httptools.HttpParserError):
            self._parse_failed(e, data)
        else:
            raise e

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
        if data.startswith(_PRI):  # llhttp stops at PRI
            self.upgrade_data = data[len(_PRI) :]  # what follows, for HTTP/2
            self._refuse(HTTP2PrefaceError(
                "an HTTP/2 connection preface (h2c with prior knowledge), and "
                "open_http2_protocol is off"
            ))  # fmt: skip
            return
        hint = ""
        if looks_like_header(data):
            hint = ": a PROXY protocol header, and open_proxy_protocol is off on this listener"
        self._refuse(MalformedRequestError(
            f"malformed request: {e} (data {data[:_SAMPLE]!r}){hint}"
        ))  # fmt: skip

    def _measure_open_head(self) -> None:
        if not self._counting:  # this head began in an unmeasured read: measure it now
            self._head_size = (
                len(self._url) + sum(len(n) + len(v) + 4 for n, v in self._headers)
                if self._url is not None
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
        # The run holds the trailer fields too (counted exactly, in _trailer) and the lines
        # around them; what it bounds is a value that never ends.
        if self._framing_run > self._header_max + _FRAMING_SLACK:
            self._refuse(
                HeaderTooLargeError(
                    f"{self._framing_run} bytes of chunk extension or trailer fields exceed "
                    f"http_header_max_length={self._header_max}"
                )
            )
        elif (
            self._framing - self._trailer_size > self._body_size + self._header_max + _FRAMING_SLACK
        ):
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
        if self._url is not None:
            self._url += url
            if self._counting:
                self._grow_head(len(url))
            return
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
        if len(name) in _SPECIAL and _SPECIAL[len(name)] == name[0] | 32:  # see _SPECIAL
            if len(name) == 15:
                if name.lower() == b"accept-encoding":
                    self._accept = self._accept + b"," + value if self._accept else value
                return
            self._special = True  # the version matters (Connection) or a rarer header came:
            if len(name) != 10:  # not Connection (the one special name of 10 bytes)
                self._rare = True

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
        parser: Any = self._parser
        method = parser.get_method()
        url = self._url
        self._url = None
        keep_alive = parser.should_keep_alive()
        if keep_alive and not self._special:
            # Only HTTP/1.1 keeps alive without a Connection header (llhttp accepts 0.9, 1.0,
            # 1.1 and 2.0; the others need "Connection: keep-alive"): no need to ask llhttp,
            # whose get_http_version() formats a string on every call.
            # The request's constructor, run as type.__call__ would but without its C-level
            # frame (a class call costs ~300 instructions more than a method call here).
            request = self._request = _new(self._request_class)
            if not self._plain_request:
                request.__init__(method, url, self._headers)  # type: ignore[misc]
            else:  # ParsedRequest's own __init__, without its frame
                request.raw_method = method
                request.raw_url = url  # type: ignore[assignment]  # (a head has one)
                request.raw_headers = self._headers
            # Set although they are the class's defaults: the response reads them, and an
            # instance's own attribute reads faster than a class's through it.
            request.version = "1.1"
            request.keep_alive = True
            accept = request.accept_encoding = self._accept
            if accept:
                self._accept = b""
            # (no BODY state: without a framing header there is no body, and llhttp completes
            # the message at once, which makes reading IDLE)
            if self._counting:
                self._head_pending = 0
                self._grow_head(len(method) + 14)  # SP URL SP HTTP/x.y CRLF ... CRLF
            self._events.append(request)  # (CONNECT stops llhttp as an upgrade: _feed_failed)
            return
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                self._fail(HTTPVersionError(f"HTTP/{version} is not supported (1.0 and 1.1 are)"))
            request = self._request = _new(self._request_class)
            if not self._plain_request:
                request.__init__(method, url, self._headers)  # type: ignore[misc]
            else:
                request.raw_method = method
                request.raw_url = url  # type: ignore[assignment]
                request.raw_headers = self._headers
            request.version = version
            request.keep_alive = keep_alive
            accept = request.accept_encoding = self._accept
            if accept:
                self._accept = b""
        self.reading = BODY
        if self._counting:
            self._head_pending = 0
            self._grow_head(len(method) + 14)  # SP URL SP HTTP/x.y CRLF ... CRLF
        if method == b"CONNECT":
            self._fail(MalformedRequestError("CONNECT (tunnelling) is not supported"))
        if self._special:
            self._special = False
            if self._rare and self._check_special(request):
                self._events.append(request)  # the head, then 100 Continue in its turn
                self._events.append(Send(_CONTINUE))
                return
        self._events.append(request)

    def _check_special(self, request: ParsedRequest) -> bool:
        """Checks the rarer headers; True when the client waits for 100 Continue."""
        self._rare = False
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
        if upgrade and self._parser.should_upgrade():  # type: ignore[union-attr]  # CONNECT was refused already
            request.upgrade = True
            request.keep_alive = False
        elif (
            (declared or self._chunked) and self.stream_if is not None and self._buffer_body
            and self.error is None
        ):  # fmt: skip
            how = self.stream_if(request)
            if how:
                self._streamed = True
                request.streamed = how
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
        if self._buffer_body and not self._streamed:
            if self._body:
                self._body.append(body)
            else:
                self._body = [body]
        else:
            self._events.append(body)

    def on_message_complete(self) -> None:
        if self._body_size or self._chunked:
            body = self._body
            if body:
                self._request.body = body[0] if len(body) == 1 else b"".join(body)
                self._body = _NOTHING
            self._body_size = self._body_in_read = self._framing = self._framing_run = 0
            self._chunked = self._streamed = False
            self._trailer_size = 0
        self.reading = IDLE
        self._events.append(END)
