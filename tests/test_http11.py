"""The sans-IO HTTP/1.1 core: reader limits at N and N+1, events, keep-alive, timeouts.

Reader cases are fed whole, byte by byte and with a request after them, in h11's style: the
events must not depend on how the bytes were split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tx_swoole.errors import (
    BodyTooLargeError,
    HeaderTooLargeError,
    HTTPRequestError,
    HTTPVersionError,
    MalformedRequestError,
    RequestTimeoutError,
)
from tx_swoole.protocols._http11 import (
    ABORT,
    CLOSE,
    END,
    LINGER,
    LINGER_BYTES,
    LINGER_TIME,
    MAX_PIPELINE,
    HTTPConnection,
    ParsedRequest,
    Refused,
    Send,
    State,
)  # fmt: skip
from tx_swoole.protocols._http11_head import status_line

OK = status_line(200)
NEXT = b"GET /next HTTP/1.1\r\n\r\n"


class Peer:
    """Drives an HTTPConnection as the glue does, answering each request with 200 "ok"."""

    def __init__(self, header_max: int = 8192, body_max: int = 1000, **kw: Any) -> None:
        self.conn = HTTPConnection(header_max, body_max, **kw)
        self.requests: list[ParsedRequest] = []
        self.error: HTTPRequestError | None = None
        self.sent = b""
        self.answer = True
        self.head: ParsedRequest | None = None
        self.other: list[Any] = []

    def feed(self, data: bytes, now: float = 0.0) -> list[ParsedRequest]:
        before = len(self.requests)
        self.handle(self.conn.receive(data, now), now)
        return self.requests[before:]

    def handle(self, events: list[Any], now: float = 0.0) -> None:
        while events:
            for event in events:
                if event is END:
                    assert self.head is not None
                    self.requests.append(self.head)
                    if self.answer:
                        self.sent += self.conn.respond(self.head, OK, (), b"ok", b"", now)
                elif isinstance(event, ParsedRequest):
                    self.head = event
                elif isinstance(event, Send):
                    self.sent += event.data
                elif isinstance(event, Refused):
                    self.error = event.error
                    self.sent += self.conn.refusal(event.error, b"", now)
                else:
                    self.other.append(event)
            events = self.conn.next_events()


def whole(peer: Peer, data: bytes) -> list[ParsedRequest]:
    return peer.feed(data)


def bytewise(peer: Peer, data: bytes) -> list[ParsedRequest]:
    return [r for i in range(len(data)) for r in peer.feed(data[i : i + 1])]


def trailing(peer: Peer, data: bytes) -> list[ParsedRequest]:
    """With a valid request after it, in the same read: served only if ``data`` was fine."""
    done = peer.feed(data + NEXT)
    if peer.error is None:
        assert done[-1].raw_url == b"/next"
        done.pop()
    else:
        assert all(r.raw_url != b"/next" for r in done)
    return done


SPLITS = pytest.mark.parametrize("feed", [whole, bytewise, trailing])
Feed = Callable[[Peer, bytes], list[ParsedRequest]]


def head_of_size(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes (request line + headers + blank line)."""
    base = b"GET / HTTP/1.1\r\nX: \r\n\r\n"
    return base.replace(b"X: ", b"X: " + b"a" * (size - len(base)))


@SPLITS
@pytest.mark.parametrize(("size", "ok"), [(8192, True), (8193, False)])
def test_header_limit_at_n_and_n_plus_1(feed: Feed, size: int, ok: bool) -> None:
    """A head of exactly http_header_max_length is served; one byte more is 431."""
    peer = Peer()
    done = feed(peer, head_of_size(size))
    if ok:
        assert len(done) == 1 and peer.error is None
    else:
        assert done == [] and isinstance(peer.error, HeaderTooLargeError)
        assert peer.error.status == 431 and "8193" in peer.error.message


@pytest.mark.parametrize("chunk", [7, 100, 4096])
def test_header_limit_holds_whatever_the_read_sizes(chunk: int) -> None:
    """The head limit holds when the head arrives in pieces of any size."""
    for size, ok in ((8192, True), (8193, False)):
        peer = Peer()
        head = head_of_size(size)
        done = [r for i in range(0, len(head), chunk) for r in peer.feed(head[i : i + chunk])]
        assert (len(done) == 1) is ok and (peer.error is None) is ok


def test_endless_header_refused_without_buffering_it() -> None:
    """A header value that never ends is refused once it passes the limit."""
    peer = Peer()
    peer.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(100):
        peer.feed(b"a" * 1000)
        if peer.error:
            break
    assert isinstance(peer.error, HeaderTooLargeError)
    assert peer.conn.reading is State.CLOSED and peer.feed(b"more") == []


def test_head_pipelined_behind_a_body_gets_the_header_timeout() -> None:
    """A head that starts in the read which ends a body is a head in progress: it gets its
    408 at http_header_timeout, not a quiet close at the keep-alive timeout."""
    peer = Peer(timeouts=(60.0, 5.0, 60.0, 60.0))
    peer.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na", 0.0)
    peer.feed(b"bcGET /next HT", 1.0)
    assert [r.body for r in peer.requests] == [b"abc"] and peer.conn.state is State.HEAD
    peer.handle(peer.conn.check(6.0, 0))
    assert peer.error is None
    peer.handle(peer.conn.check(6.1, 0))
    assert isinstance(peer.error, RequestTimeoutError)


def test_endless_crlfs_before_a_request_are_a_head_too() -> None:
    """Blank lines before a request count toward its head: a peer trickling CRLFs is refused
    at the limit instead of being read for ever."""
    peer = Peer(header_max=1000)
    for _ in range(600):
        peer.feed(b"\r\n")
    assert isinstance(peer.error, HeaderTooLargeError)


@SPLITS
@pytest.mark.parametrize(("length", "ok"), [(1000, True), (1001, False)])
def test_declared_body_limit_before_body(feed: Feed, length: int, ok: bool) -> None:
    """Content-Length over package_max_length is refused from the head alone (413)."""
    peer = Peer()
    head = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % length
    if ok:
        [request] = feed(peer, head + b"b" * length)
        assert request.body == b"b" * length and peer.error is None
    else:
        assert feed(peer, head) == []
        assert isinstance(peer.error, BodyTooLargeError) and peer.error.status == 413
        assert "declared body of 1001 bytes exceeds package_max_length=1000" in peer.error.message


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


CHUNKED = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked_head(path: bytes) -> bytes:
    return CHUNKED.replace(b"POST /", b"POST " + path)


@SPLITS
@pytest.mark.parametrize(("sizes", "ok"), [((500, 500), True), ((500, 501), False)])
def test_chunked_body_counted_as_it_arrives(feed: Feed, sizes: tuple[int, int], ok: bool) -> None:
    """Chunked bodies count toward package_max_length chunk by chunk."""
    peer = Peer()
    done = feed(peer, CHUNKED + chunked(*(b"c" * n for n in sizes)))
    if ok:
        assert done[0].body == b"c" * 1000
    else:
        assert done == [] and isinstance(peer.error, BodyTooLargeError)


@SPLITS
def test_trailers_are_kept_apart_from_headers(feed: Feed) -> None:
    """Trailer fields reach request.trailers, never request.raw_headers."""
    peer = Peer()
    [request] = feed(peer, CHUNKED + chunked(b"abc", trailer=b"Authorization: evil\r\n"))
    assert request.body == b"abc" and request.trailers == [(b"Authorization", b"evil")]
    assert all(name != b"Authorization" for name, _ in request.raw_headers)


@SPLITS
@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_trailer_section_counts_against_header_limit(feed: Feed, size: int, ok: bool) -> None:
    """Trailer fields of N bytes (canonical) are accepted, N+1 refused with 431, however the
    section arrives."""
    value = b"v" * (size - len(b"T: \r\n"))
    peer = Peer(header_max=1000)
    done = feed(peer, CHUNKED + chunked(b"x", trailer=b"T: " + value + b"\r\n"))
    assert (len(done) == 1) is ok
    assert ok or isinstance(peer.error, HeaderTooLargeError)


@pytest.mark.parametrize("where", [b"0\r\nT: ", b"5;ext="])
def test_never_ending_trailer_or_chunk_extension_refused(where: bytes) -> None:
    """A trailer value or chunk extension that never ends is refused (431) once the bytes
    without body pass http_header_max_length: the peer cannot hold the worker's CPU."""
    peer = Peer(header_max=1000, body_max=10**9)
    peer.feed(CHUNKED + where)
    fed = 0
    while peer.error is None and fed < 100_000:
        peer.feed(b"a" * 100)
        fed += 100
    assert isinstance(peer.error, HeaderTooLargeError) and fed <= 1200


def test_many_tiny_chunks_refused_once_framing_outweighs_body() -> None:
    """One-byte chunks cost a callback each: once their framing exceeds the body plus
    http_header_max_length, the request is refused (400)."""
    peer = Peer(header_max=1000, body_max=10**9)
    peer.feed(CHUNKED)
    sent = 0
    while peer.error is None and sent < 100_000:
        peer.feed(b"1\r\na\r\n" * 50)
        sent += 300
    assert isinstance(peer.error, MalformedRequestError) and "framing" in peer.error.message
    assert sent < 3000


@SPLITS
@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["request-line", "method", "nul", "header-space", "chunk-size", "cl-and-te",
         "dup-cl", "negative-cl", "connect", "http10-te"],
)  # fmt: skip
def test_malformed_and_smuggling_requests_are_400(feed: Feed, raw: bytes) -> None:
    """Malformed and ambiguous (smuggling) requests are refused with 400, none delivered;
    nothing pipelined after them is served."""
    peer = Peer()
    assert feed(peer, raw) == []
    assert isinstance(peer.error, MalformedRequestError) and peer.error.status == 400
    assert peer.conn.state is State.LINGERING


@SPLITS
@pytest.mark.parametrize(
    "raw", [b"GET / HTTP/2.0\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/0.9\r\n\r\n"]
)
def test_other_versions_are_505(feed: Feed, raw: bytes) -> None:
    """HTTP/0.9 and HTTP/2.0 in HTTP/1 framing are refused with 505, not answered as 1.1."""
    peer = Peer()
    assert feed(peer, raw) == []
    assert isinstance(peer.error, HTTPVersionError) and peer.error.status == 505


def test_pipelined_requests_with_bodies_in_order() -> None:
    """Several requests in one read, bodies included, come out whole and in order, one at a
    time: the next is handed out only when the previous response ended."""
    peer = Peer()
    peer.answer = False
    data = (
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        + chunked_head(b"/b") + chunked(b"de", b"f")
        + b"GET /c?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    )  # fmt: skip
    [first] = peer.feed(data)
    assert peer.conn.state is State.HANDLING and len(peer.conn.held) == 4
    peer.answer = True
    peer.sent += peer.conn.respond(first, OK, (), b"", b"", 0.0)
    peer.handle(peer.conn.next_events())
    assert [(r.raw_method, r.raw_url, r.body) for r in peer.requests] == [
        (b"POST", b"/a", b"abc"), (b"POST", b"/b", b"def"), (b"GET", b"/c?x=1", b"")
    ]  # fmt: skip
    assert peer.requests[2].raw_headers == [(b"Host", b"h")]


def test_good_request_before_bad_one_is_still_answered() -> None:
    """A valid request pipelined before a bad one is answered first; the error follows."""
    peer = Peer()
    done = peer.feed(b"GET /ok HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n")
    assert [r.raw_url for r in done] == [b"/ok"] and peer.error is not None
    assert peer.sent.index(b"200 OK") < peer.sent.index(b"400 Bad Request")


@pytest.mark.parametrize(
    ("raw", "keep_alive", "version"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", True, "1.1"),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False, "1.1"),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", True, "1.1"),
        (b"GET / HTTP/1.0\r\n\r\n", False, "1.0"),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, "1.0"),
    ],
)
def test_keep_alive_rules(raw: bytes, keep_alive: bool, version: str) -> None:
    """HTTP/1.1 keeps alive unless told otherwise; HTTP/1.0 only with keep-alive; the
    response says so and the connection lingers when it closes."""
    peer = Peer()
    [request] = peer.feed(raw)
    assert (request.keep_alive, request.version) == (keep_alive, version)
    assert (b"Connection: close" in peer.sent) is not keep_alive
    assert peer.conn.state is (State.IDLE if keep_alive else State.LINGERING)


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_handler_connection_close_wins_and_is_said_once(version: bytes) -> None:
    """A handler's own Connection: close on a keep-alive request closes the connection, and
    the response carries one Connection header."""
    conn = HTTPConnection(8192, 1000)
    events = conn.receive(b"GET / HTTP/%s\r\nConnection: keep-alive\r\n\r\n" % version, 0.0)
    out = conn.respond(events[0], OK, ("Connection", "close"), b"x", b"", 0.0)
    assert out.count(b"Connection") == 1 and b"Connection: close\r\n" in out
    assert conn.state is State.LINGERING


def test_expect_continue_in_its_turn_and_only_within_limits() -> None:
    """100 Continue is sent for an acceptable, non-empty body, after the response before it."""
    peer = Peer()
    peer.answer = False
    head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    [first] = peer.feed(b"GET /first HTTP/1.1\r\n\r\n" + head)
    assert b"100 Continue" not in peer.sent
    peer.answer = True
    peer.sent += peer.conn.respond(first, OK, (), b"1", b"", 0.0)
    peer.handle(peer.conn.next_events())
    assert peer.sent.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert peer.feed(b"abc")[0].body == b"abc"
    for length in (0, 1001):
        other = Peer()
        other.feed(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length
        )
        assert b"100 Continue" not in other.sent


def test_upgrade_request_answered_and_connection_closed() -> None:
    """An Upgrade request is answered normally (no switch), then the connection closes;
    nothing after it is parsed."""
    peer = Peer()
    done = peer.feed(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n" + NEXT)
    assert [r.upgrade for r in done] == [True] and peer.conn.state is State.LINGERING


def test_a_fault_of_the_request_class_is_raised_not_taken_for_bad_input() -> None:
    """An exception from our own code inside the parse is not the peer's fault: it
    propagates instead of becoming a 400."""

    class Broken(ParsedRequest):
        def __init__(self, *args: Any) -> None:
            raise RuntimeError("bug")

    conn = HTTPConnection(8192, 1000, request_class=Broken)
    with pytest.raises(RuntimeError, match="bug"):
        conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert conn.error is None


def test_request_class_with_or_without_an_init_of_its_own() -> None:
    """A request class keeping ParsedRequest's constructor gets its fields set by the core
    directly (and keeps the class defaults for the rest); one with an ``__init__`` of its own
    is called with (method, url, headers)."""

    class Plain(ParsedRequest):
        extra = "default"

    class Own(ParsedRequest):
        def __init__(self, method: bytes, url: bytes, headers: list[Any]) -> None:
            super().__init__(method, url.upper(), headers)

    for cls, url in ((Plain, b"/a"), (Own, b"/A")):
        conn = HTTPConnection(8192, 1000, request_class=cls)
        events = conn.receive(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 0.0)
        request = events[0]
        assert type(request) is cls and events[1:] == [END]
        assert (request.raw_method, request.raw_url, request.raw_headers) == (
            b"GET", url, [(b"Host", b"h")],
        )  # fmt: skip
        assert (request.version, request.keep_alive, request.body) == ("1.1", True, b"")
    made = ParsedRequest(b"PUT", b"/x", [(b"A", b"b")])  # the ordinary constructor
    assert (made.raw_method, made.raw_url, made.raw_headers, made.upgrade) == (
        b"PUT", b"/x", [(b"A", b"b")], False,
    )  # fmt: skip


def test_lone_marks_one_whole_request_alone_in_its_read() -> None:
    """``lone`` (the protocol's cue to serve at once) is True only when the read held one
    whole request and nothing else, with nothing waiting."""
    get = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    cases: list[tuple[list[bytes], list[bool]]] = [
        ([get], [True]),
        ([get + get], [False]),  # a pipeline: the second is held
        ([get[:10], get[10:]], [False, False]),  # a head over two reads
        ([b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"], [True]),  # body buffered
        ([b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", b"cd"], [False, False]),
        ([b"GET / HTTP/1.0\r\n\r\n"], [True]),  # (closed after its answer)
        ([b"BAD\r\n\r\n"], [False]),  # refused
    ]
    for reads, expected in cases:
        conn = HTTPConnection(8192, 1000)
        seen = []
        for data in reads:
            events = conn.receive(data, 0.0)
            seen.append(conn.lone)
            if conn.lone:
                assert len(events) == 2 and isinstance(events[0], ParsedRequest)
                assert events[1] is END
        assert seen == expected, reads
    conn = HTTPConnection(8192, 1000)
    conn.receive(get, 0.0)
    conn.receive(get, 0.0)  # while the first is being answered: held
    assert not conn.lone and conn.held


def test_body_events_when_not_buffered() -> None:
    """With buffer_body=False the body comes as data events between head and END."""
    conn = HTTPConnection(8192, 1000, buffer_body=False)
    events = conn.receive(CHUNKED + b"3\r\nabc\r\n", 0.0)
    assert isinstance(events[0], ParsedRequest) and events[1:] == [b"abc"]
    assert conn.receive(b"2\r\nde\r\n0\r\n\r\n", 0.0) == [b"de", END]


def compact_head(size: int) -> bytes:
    """A GET head of canonical ``size`` bytes written as compactly as llhttp allows: empty
    ``A:`` header lines (4 raw bytes, 5 canonical), the most a raw head can undercount."""
    head = b"GET / HTTP/1.1\r\n"
    n = (size - len(head) - 2 - len(b"Z: \r\n")) // 5
    value = b"v" * (size - len(head) - 2 - len(b"Z: \r\n") - 5 * n)
    out = head + b"A:\r\n" * n + b"Z:" + value + b"\r\n\r\n"
    assert len(out) == size - n - 1  # one byte short per line, "Z:" included
    return out


@pytest.mark.parametrize("chunk", [None, 1, 500, 1000])
@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_compact_heads_are_measured_canonically(chunk: int | None, size: int, ok: bool) -> None:
    """A head is measured in canonical form whether or not its read was small enough to skip
    measuring: a compact head of canonical N+1 bytes is refused in one read or in pieces."""
    raw = compact_head(size)
    assert len(raw) < size * 81 // 100  # just over the 4/5 of a read that goes unmeasured
    peer = Peer(header_max=1000)
    step = chunk or len(raw)
    done = [r for i in range(0, len(raw), step) for r in peer.feed(raw[i : i + step])]
    assert (len(done) == 1) is ok and isinstance(peer.error, HeaderTooLargeError) is not ok


PIPELINE = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    chunked_head(b"/c") + chunked(b"ab", b"cde", trailer=b"T: 1\r\n"),
    b"\r\nGET /d?q=1 HTTP/1.1\r\nConnection: keep-alive\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    b"GET /e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]


def _summary(peer: Peer) -> list[Any]:
    return [
        (r.raw_method, r.raw_url, r.raw_headers, r.body, list(r.trailers), r.keep_alive)
        for r in peer.requests
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_a_pipeline_gives_the_same_events(cuts: list[int]) -> None:
    """Whatever the read boundaries, a valid pipeline yields the same requests and bytes."""
    data = b"".join(PIPELINE)
    reference = Peer()
    reference.feed(data)
    peer = Peer()
    points = sorted({c % (len(data) + 1) for c in cuts})
    for a, b in zip([0, *points], [*points, len(data)], strict=True):
        peer.feed(data[a:b])
    assert _summary(peer) == _summary(reference) and len(peer.requests) == len(PIPELINE)
    assert peer.sent == reference.sent and peer.error is None


# -- keep-alive and close ----------------------------------------------------------------------


def test_half_close_answers_what_was_asked_then_closes() -> None:
    """After the peer's half-close, every request it sent is answered; the last response
    says Connection: close and the core says CLOSE-state (no lingering)."""
    peer = Peer()
    peer.answer = False
    [first] = peer.feed(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert peer.conn.receive_eof(0.0) == []
    one = peer.conn.respond(first, OK, (), b"1", b"", 0.0)
    assert b"Connection" not in one
    [head, end] = peer.conn.next_events()
    assert end is END
    two = peer.conn.respond(head, OK, (), b"2", b"", 0.0)
    assert b"Connection: close" in two and peer.conn.state is State.CLOSED


def test_half_close_when_idle_closes_at_once() -> None:
    """A half-close with nothing in progress closes the connection."""
    conn = HTTPConnection(8192, 1000)
    assert conn.receive_eof(0.0) == [CLOSE]


def test_draining_closes_after_each_response_and_idle_after_grace() -> None:
    """While draining, responses say Connection: close; an idle connection lingers out once
    it has been idle for the grace."""
    conn = HTTPConnection(8192, 1000)
    [request, _] = conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    conn.respond(request, OK, (), b"", b"", 10.0)
    conn.start_draining()
    assert conn.drain(10.4, 0.5) == [] and conn.drain(10.5, 0.5) == [LINGER]
    busy = HTTPConnection(8192, 1000)
    [request, _] = busy.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    busy.start_draining()
    assert busy.drain(100.0, 0.5) == []
    assert b"Connection: close" in busy.respond(request, OK, (), b"", b"", 0.0)


def test_output_pause_holds_requests_and_pauses_reading() -> None:
    """While the client reads nothing, no further request is handed out and the caller is
    told to stop reading; when it drains, the held requests come in order."""
    peer = Peer()
    peer.conn.pause_output()
    assert peer.feed(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n") == []
    assert peer.conn.reading_paused
    peer.handle(peer.conn.resume_output())
    assert [r.raw_url for r in peer.requests] == [b"/1", b"/2"]
    assert not peer.conn.reading_paused


def test_reading_pauses_when_many_requests_are_held() -> None:
    """MAX_PIPELINE requests held behind a slow one pause reading."""
    peer = Peer()
    peer.answer = False
    peer.feed(b"GET / HTTP/1.1\r\n\r\n" * (MAX_PIPELINE + 1))
    assert peer.conn.reading_paused


def test_streamed_response_framing() -> None:
    """start_response/data/end frame chunks for 1.1 and close-delimit for 1.0."""
    conn = HTTPConnection(8192, 1000)
    [request, _] = conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    out = conn.start_response(request, OK, (), None, b"")
    out += conn.data(b"ab") + conn.data(b"") + conn.end(0.0)
    assert out.endswith(b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
    assert conn.state is State.IDLE
    old = HTTPConnection(8192, 1000)
    [request, _] = old.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.0)
    out = old.start_response(request, OK, (), None, b"") + old.data(b"ab") + old.end(0.0)
    assert out.endswith(b"Connection: close\r\n\r\nab") and old.state is State.LINGERING


# -- time ----------------------------------------------------------------------------------------


def test_keepalive_timeout_only_when_idle() -> None:
    """Idle means no request in progress, nothing unsent, nothing arriving: just before the
    timeout nothing happens, just after it the core says CLOSE."""
    conn = HTTPConnection(8192, 1000, timeouts=(3.0, 30.0, 60.0, 60.0))
    [request, _] = conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    conn.respond(request, OK, (), b"x" * 100, b"", 1.0)
    assert conn.check(3.5, 100) == []  # the response is still going out: not idle
    assert conn.check(6.5, 0) == []  # idle since 3.5
    assert conn.check(6.6, 0) == [CLOSE]


def test_idle_connection_rests_without_its_parser() -> None:
    """A sweep that finds the connection between requests takes its llhttp parser and the last
    request's objects away; the next request (pipelined, split, or with a body) is read the
    same.  A head or body in progress keeps its parser over any number of sweeps."""
    peer = Peer(timeouts=(60.0, 30.0, 60.0, 60.0))
    peer.feed(b"GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n", 0.0)
    assert peer.conn.check(1.0, 0) == []
    assert peer.conn._parser is None and peer.conn._request is None
    peer.feed(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", 2.0)
    peer.feed(b"cGET /c HTTP/1.1\r\nHost: x\r\n", 3.0)
    for now in (4.0, 5.0):  # a head in progress
        assert peer.conn.check(now, 0) == []
        assert peer.conn._parser is not None
    peer.feed(b"\r\n" + NEXT, 6.0)
    assert [(r.raw_method, r.raw_url, r.body) for r in peer.requests] == [
        (b"GET", b"/a", b""), (b"POST", b"/b", b"abc"),
        (b"GET", b"/c", b""), (b"GET", b"/next", b""),
    ]  # fmt: skip
    assert peer.requests[0].raw_headers == [(b"X-A", b"1")]
    assert peer.requests[2].raw_headers == [(b"Host", b"x")]
    assert peer.sent.count(b"200 OK") == 4 and peer.error is None
    peer.conn.check(7.0, 0)
    peer.feed(b"GET /bad HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 8.0)
    assert isinstance(peer.error, MalformedRequestError)  # refused as before the rest


def test_slow_upload_is_not_cut_by_the_keepalive_timeout() -> None:
    """A body arriving slowly is bounded by http_body_timeout between reads, not by the
    keep-alive timeout."""
    peer = Peer(body_max=10_000, timeouts=(3.0, 30.0, 5.0, 60.0))
    peer.feed(b"POST / HTTP/1.1\r\nContent-Length: 4000\r\n\r\n", 0.0)
    now = 0.0
    for _ in range(40):
        now += 0.2
        peer.feed(b"x" * 100, now)
        peer.handle(peer.conn.check(now, 0), now)
    assert [len(r.body) for r in peer.requests] == [4000]
    assert peer.error is None and b"200 OK" in peer.sent


def test_body_timeout_gives_408() -> None:
    """No body byte for http_body_timeout → 408 (not before)."""
    peer = Peer(timeouts=(3.0, 30.0, 5.0, 60.0))
    peer.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", 1.0)
    peer.handle(peer.conn.check(6.0, 0))
    assert peer.error is None
    peer.handle(peer.conn.check(6.1, 0))
    assert isinstance(peer.error, RequestTimeoutError) and b"408 Request Timeout" in peer.sent


@pytest.mark.parametrize("first", [b"G", b"\r\n"])
def test_header_timeout_runs_from_the_first_byte(first: bytes) -> None:
    """A trickled method, or blank lines before a request, get their 408 at
    http_header_timeout from the first byte, not a reset at the keep-alive timeout."""
    peer = Peer(timeouts=(60.0, 5.0, 60.0, 60.0))
    peer.feed(first, 10.0)
    peer.feed(first if first == b"\r\n" else b"E", 14.0)
    peer.handle(peer.conn.check(15.0, 0))
    assert peer.error is None
    peer.handle(peer.conn.check(15.1, 0))
    assert isinstance(peer.error, RequestTimeoutError)


def test_send_timeout_aborts_a_client_that_reads_nothing() -> None:
    """A client that reads none of its unsent response for http_send_timeout is aborted;
    one that reads slowly is not."""
    conn = HTTPConnection(8192, 1000, timeouts=(2.0, 30.0, 60.0, 10.0))
    [request, _] = conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    size = len(conn.respond(request, OK, (), b"x" * 8_000_000, b"", 0.0))
    unsent = size
    for t in range(1, 30):  # reads 100 kB a second: slow but moving
        unsent -= 100_000
        assert conn.check(float(t), unsent) == []
    assert conn.check(39.0, unsent) == [] and conn.check(39.1, unsent) == [ABORT]


def test_lingering_close_ends_within_its_time() -> None:
    """After a closing response the connection discards input and closes LINGER_TIME after
    the output was sent, or once LINGER_BYTES were discarded."""
    peer = Peer()
    peer.feed(b"BAD\r\n\r\n", 0.0)
    assert peer.conn.state is State.LINGERING
    assert peer.conn.check(LINGER_TIME - 0.1, 0) == []
    assert peer.conn.check(LINGER_TIME, 0) == [CLOSE]
    flood = Peer()
    flood.feed(b"BAD\r\n\r\n", 0.0)
    events: list[Any] = []
    for _ in range(LINGER_BYTES // 65536 + 1):
        events += flood.conn.receive(b"x" * 65536, 0.0)
    assert events == [CLOSE]


def test_lingering_with_unsent_output_is_bounded_by_the_send_timeout() -> None:
    """A closing response the client never reads does not keep the connection for ever."""
    conn = HTTPConnection(8192, 1000, timeouts=(60.0, 30.0, 60.0, 5.0))
    [request, _] = conn.receive(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0.0)
    conn.respond(request, OK, (), b"x" * 100_000, b"", 0.0)
    assert conn.check(1.0, 90_000) == [] and conn.check(6.0, 90_000) == []
    assert conn.check(6.1, 90_000) == [ABORT]


def test_an_empty_204_or_304_carries_no_content_length_even_after_an_empty_200() -> None:
    from tx_swoole.protocols._http11 import _length
    from tx_swoole.protocols._http11_head import status_line

    assert _length(0, status_line(200)) == b"Content-Length: 0\r\n"
    assert _length(0, status_line(304)) == b"" and _length(0, status_line(204)) == b""
    assert _length(5, status_line(304)) == b"Content-Length: 5\r\n"
