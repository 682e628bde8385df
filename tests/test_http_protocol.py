"""The HTTP protocol over StringTransport with task.Clock: what clients and handlers see."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from tx_swoole.protocols.http import HTTPFactory, HTTPProtocol, Request, Response

from .support import HalfCloseTransport

ADDR = IPv4Address("TCP", "127.0.0.1", 40001)


def serve(handler: Any, settings: dict[str, Any] | None = None, clock: task.Clock | None = None):
    clock = clock or task.Clock()
    factory = HTTPFactory(handler, settings or {}, reactor=clock)
    factory.startFactory()
    proto = factory.buildProtocol(ADDR)
    assert isinstance(proto, HTTPProtocol)
    transport = HalfCloseTransport()
    proto.makeConnection(transport)
    return factory, proto, transport, clock


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split the bytes written into (status, headers, body) of Content-Length responses."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(": ")
            headers[k.lower()] = v
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        raw = rest[n:]
    return out


def hello(request: Request, response: Response) -> None:
    response.header("X-Path", request.path)
    response.end(b"hi " + request.body)


def test_sync_handler_keep_alive_and_default_headers() -> None:
    """A plain handler answers with Server, Date, Content-Type and Content-Length; the
    connection stays open for the next request."""
    factory, proto, t, _ = serve(hello)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    [(status, headers, body)] = responses(t.value())
    assert (status, body) == (200, b"hi ")
    assert headers["server"] == "tx_swoole" and headers["content-type"] == "text/html"
    assert headers["x-path"] == "/a" and "date" in headers and "connection" not in headers
    assert not t.disconnecting and factory.requestCount == 1


def test_request_api() -> None:
    """The handler sees method, path, query args, headers (repeated kept), cookies, form."""
    seen: dict[str, Any] = {}

    def handler(request: Request, response: Response) -> None:
        seen.update(
            method=request.method, path=request.path, args=request.args, a=request.arg("a"),
            accept=request.headers.get_all("Accept"), host=request.headers["HOST"],
            cookies=request.cookies, form=request.form, version=request.version,
            remote=request.remote_addr, query=request.query_string,
        )  # fmt: skip
        response.end()

    _, proto, _, _ = serve(handler)
    body = b"x=1&y=&x=2"
    proto.dataReceived(
        b"POST /p%%20q?a=1&a=2&b= HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n"
        b"Cookie: s=1; t=2\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert seen == {
        "method": "POST", "path": "/p%20q", "args": {"a": ["1", "2"], "b": [""]}, "a": "1",
        "accept": ["a", "b"], "host": "h", "cookies": {"s": "1", "t": "2"},
        "form": {"x": ["1", "2"], "y": [""]}, "version": "1.1", "remote": ("192.168.1.1", 54321),
        "query": "a=1&a=2&b=",
    }  # fmt: skip


def test_response_api_status_repeated_headers_cookies_redirect() -> None:
    """Status, repeated headers, cookies and redirects reach the client."""

    def handler(request: Request, response: Response) -> None:
        if request.path == "/go":
            response.redirect("/there", 301)
            return
        response.status(201)
        response.header("X-Many", "1")
        response.header("X-Many", "2")
        response.header("Content-Type", "text/plain")
        response.cookie("sid", "a b", max_age=60, httponly=True)
        response.end("créé")

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\nGET /go HTTP/1.1\r\n\r\n")
    raw = t.value()
    first = raw.split(b"\r\n\r\n")[0]
    assert b"X-Many: 1\r\nX-Many: 2\r\n" in first and first.count(b"Content-Type") == 1
    assert b"Set-Cookie: sid=a%20b; Max-Age=60; Path=/; HttpOnly\r\n" in raw
    [(s1, _, b1), (s2, h2, _)] = responses(raw)
    assert (s1, b1.decode()) == (201, "créé") and (s2, h2["location"]) == (301, "/there")


@pytest.mark.parametrize(
    ("name", "value"), [("X-A", "v\r\nSet-Cookie: evil=1"), ("X-B\r\nEvil", "v"), ("X", "a\0b")]
)
def test_header_injection_refused_with_500(name: str, value: str) -> None:
    """Header names/values with CR, LF or NUL raise in the handler → 500, nothing injected."""

    def handler(request: Request, response: Response) -> None:
        response.header(name, value)
        response.end()

    _, proto, t, _ = serve(handler)
    with capturedLogs():
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    [(status, _, _)] = responses(t.value())
    assert status == 500 and b"evil" not in t.value().lower()


def test_handler_exception_gives_500_and_connection_lives() -> None:
    """A handler exception → 500, logged with traceback; the next request is served."""
    calls = []

    def handler(request: Request, response: Response) -> None:
        calls.append(request.path)
        if request.path == "/boom":
            raise RuntimeError("bug")
        response.end("fine")

    _, proto, t, _ = serve(handler)
    with capturedLogs() as events:
        proto.dataReceived(b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
    assert [r[0] for r in responses(t.value())] == [500, 200]
    assert any(e.get("log_failure") for e in events) and calls == ["/boom", "/ok"]


def test_async_handlers_pipelined_answer_in_order() -> None:
    """Pipelined requests are answered in order even when later ones finish first."""
    pending: dict[str, defer.Deferred[None]] = {}

    async def handler(request: Request, response: Response) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        pending[request.path] = d
        await d
        response.end(request.path + ":" + request.body.decode())

    _, proto, t, _ = serve(handler)
    proto.dataReceived(
        b"POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\na"
        b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n"
        b"GET /3 HTTP/1.1\r\n\r\n"
    )
    assert list(pending) == ["/1"]  # one at a time, in order
    pending["/1"].callback(None)
    assert list(pending) == ["/1", "/2"]
    pending["/2"].callback(None)
    pending["/3"].callback(None)
    assert [r[2] for r in responses(t.value())] == [b"/1:a", b"/2:b", b"/3:"]


def test_pipelined_after_connection_close_not_served() -> None:
    """Requests pipelined after one that closes the connection reach no handler; requests
    pipelined after a request answered with keep-alive are served in the same read."""
    calls = []

    def handler(request: Request, response: Response) -> None:
        calls.append(request.path)
        response.end(request.path)

    _, proto, t, _ = serve(handler)
    proto.dataReceived(
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nConnection: close\r\n\r\n"
        b"GET /3 HTTP/1.1\r\n\r\nGET /4 HTTP/1.1\r\n\r\n"
    )
    assert calls == ["/1", "/2"] and [r[2] for r in responses(t.value())] == [b"/1", b"/2"]
    assert t.writeClosed
    proto.dataReceived(b"GET /5 HTTP/1.1\r\n\r\n")  # lingering: drained, not parsed
    assert calls == ["/1", "/2"]


def test_async_handler_failure_is_500() -> None:
    """An async handler that raises gives 500."""

    async def handler(request: Request, response: Response) -> None:
        raise ValueError("async bug")

    _, proto, t, _ = serve(handler)
    with capturedLogs():
        proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert responses(t.value())[0][0] == 500


def test_http10_keep_alive_answered_in_kind() -> None:
    """HTTP/1.0 with Connection: keep-alive gets Connection: keep-alive and stays open."""
    _, proto, t, _ = serve(hello)
    proto.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert responses(t.value())[0][1]["connection"] == "keep-alive" and not t.writeClosed
    t.clear()
    proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert responses(t.value())[0][1]["connection"] == "close" and t.writeClosed


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 2000000000\r\n\r\n", 413),
        (b"BAD REQUEST LINE\r\n\r\n", 400),
    ],
)
def test_refused_requests_status_close_warning_and_nothing_reaches_handler(
    raw: bytes, status: int
) -> None:
    """431/413/400 come with Connection: close, a short body and a WARNING with the numbers;
    the handler never runs; the connection half-closes and drains (lingering close)."""
    calls = []
    _, proto, t, clock = serve(lambda q, r: calls.append(q))
    with capturedLogs() as events:
        proto.dataReceived(raw)
    [(got, headers, body)] = responses(t.value())
    assert (got, headers["connection"]) == (status, "close") and body.startswith(b"%d" % status)
    assert calls == [] and t.writeClosed and not t.disconnecting
    warning = [e for e in events if e["log_level"].name == "warn"][0]
    assert warning["status"] == status
    proto.dataReceived(b"x" * 10000)  # the client keeps sending: drained, not answered
    assert len(responses(t.value())) == 1
    clock.advance(2.1)  # lingering ends
    assert t.disconnecting


def test_413_sent_before_body_and_100_continue_only_within_limits() -> None:
    """Expect: 100-continue is answered only when the declared body is acceptable."""
    _, proto, t, _ = serve(hello, {"package_max_length": 100})
    proto.dataReceived(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert t.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.dataReceived(b"hello")
    assert responses(t.value().split(b"\r\n\r\n", 1)[1])[0][2] == b"hi hello"
    _, proto, t, _ = serve(hello, {"package_max_length": 100})
    proto.dataReceived(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n")
    assert t.value().startswith(b"HTTP/1.1 413 ")


def test_chunked_streaming_and_head() -> None:
    """write() streams a chunked body; HEAD gets headers and no body."""

    def handler(request: Request, response: Response) -> None:
        response.write("ab")
        response.write(b"")
        response.write(b"cde")
        response.end("f" if request.path == "/tail" else b"")

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert t.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET /tail HTTP/1.1\r\n\r\n")  # end(body) after write(): last chunk
    assert t.value().endswith(b"\r\n3\r\ncde\r\n1\r\nf\r\n0\r\n\r\n")
    _, proto, t, _ = serve(hello)
    proto.dataReceived(b"HEAD / HTTP/1.1\r\n\r\n")
    assert t.value().endswith(b"Content-Length: 3\r\n\r\n")


def test_idle_keepalive_timeout_and_header_timeout() -> None:
    """Idle keep-alive connections close after http_keepalive_timeout; a head not complete
    within http_header_timeout gets 408."""
    settings = {"http_keepalive_timeout": 5, "http_header_timeout": 3}
    _, proto, t, clock = serve(hello, settings)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    clock.advance(5)
    assert not t.disconnecting
    clock.advance(1)
    assert t.disconnecting
    _, proto, t, clock = serve(hello, settings)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost:")
    clock.advance(3)
    assert t.value() == b""
    clock.advance(1)
    assert t.value().startswith(b"HTTP/1.1 408 ") and t.writeClosed


def test_draining_sends_connection_close_and_closes_idle() -> None:
    """While draining: a response in progress carries Connection: close; an idle connection
    is closed once it has been idle DRAIN_IDLE_GRACE, and a request that arrives within that
    grace is answered (with Connection: close) rather than lost."""
    never: defer.Deferred[None] = defer.Deferred()
    slow: list[Response] = []

    def handler(request: Request, response: Response) -> Any:
        if request.path == "/slow":
            slow.append(response)
            return never
        return response.end("ok")

    factory, busy, tb, clock = serve(handler)
    busy.dataReceived(b"GET /slow HTTP/1.1\r\n\r\n")
    idle = factory.buildProtocol(ADDR)
    ti = HalfCloseTransport()
    idle.makeConnection(ti)
    hot = factory.buildProtocol(ADDR)
    th = HalfCloseTransport()
    hot.makeConnection(th)
    clock.advance(2)  # idle and hot have been idle for 2 s
    hot.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # hot was just answered
    th.clear()
    factory.startDraining()
    assert ti.writeClosed and not th.writeClosed and not tb.writeClosed
    hot.dataReceived(b"GET / HTTP/1.1\r\n\r\n")  # arrives within the grace: answered
    assert responses(th.value())[0][1]["connection"] == "close" and th.writeClosed
    slow[0].end(b"late")
    assert responses(tb.value())[0][1]["connection"] == "close" and tb.writeClosed


def test_draining_closes_quiet_connection_after_grace() -> None:
    """A keep-alive connection that stays quiet is closed once the grace has passed."""
    factory, proto, t, clock = serve(hello)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    factory.startDraining()
    clock.advance(0.5)
    assert not t.writeClosed  # within the grace (plus one tick of the drain clock)
    clock.advance(0.25)
    assert t.writeClosed


def test_connection_lost_mid_handler_is_quiet() -> None:
    """A client that leaves while its async handler runs: end() returns False, no error."""
    result = []
    d: defer.Deferred[None] = defer.Deferred()

    async def handler(request: Request, response: Response) -> None:
        await d
        result.append(response.end("x"))

    _, proto, _, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    proto.connectionLost(Failure(ConnectionDone()))
    d.callback(None)
    assert result == [False]


def test_sendfile(tmp_path: Any) -> None:
    """sendfile streams a file with its length and a guessed Content-Type."""
    path = tmp_path / "page.txt"
    path.write_bytes(b"file body" * 1000)
    done = []

    def handler(request: Request, response: Response) -> Any:
        d = response.sendfile(str(path))
        d.addCallback(done.append)
        return d

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    [(status, headers, body)] = responses(t.value())
    assert (status, headers["content-type"], body) == (200, "text/plain", b"file body" * 1000)
    assert done == [None]


def test_bad_header_refused_before_anything_is_sent(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad header makes end()/write()/sendfile() raise before the head goes out (so the
    handler's exception becomes a clean 500), and sendfile closes the file it opened."""
    path = tmp_path / "page.txt"
    path.write_bytes(b"x")
    opened: list[Any] = []
    real_open = open

    def tracking_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr("builtins.open", tracking_open)

    def handler(request: Request, response: Response) -> Any:
        response.header("X-Bad", "a\r\nb")
        if request.path == "/file":
            return response.sendfile(str(path))
        if request.path == "/stream":
            response.write("part")
        response.end("body")
        return None

    for target in (b"/", b"/stream", b"/file"):
        _, proto, t, _ = serve(handler)
        with capturedLogs():
            proto.dataReceived(b"GET %s HTTP/1.1\r\n\r\n" % target)
        [(status, _, _)] = responses(t.value())
        assert status == 500 and b"a\r\nb" not in t.value()
    assert len(opened) == 1 and opened[0].closed


class SlowClientTransport(HalfCloseTransport):
    """A transport whose client reads nothing: ``unsent`` bytes stay pending, as Twisted's
    buffer would hold them, until ``drain()``."""

    def __init__(self) -> None:
        super().__init__()
        self.unsent = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.unsent += len(data)

    def pendingBytes(self) -> int:
        return self.unsent

    def drain(self) -> None:
        """The client read everything: Twisted resumes its producer."""
        self.unsent = 0
        self.producer.resumeProducing()


def slow_serve(handler: Any, settings: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    clock = task.Clock()
    factory = HTTPFactory(handler, settings, reactor=clock)
    factory.startFactory()
    proto = factory.buildProtocol(ADDR)
    transport = SlowClientTransport()
    proto.makeConnection(transport)
    return factory, proto, transport, clock


def test_bytes_in_and_out_are_counted_in_client_info() -> None:
    """getClientInfo reports the bytes an HTTP connection received and sent."""
    factory, proto, t, _ = serve(hello)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    proto.dataReceived(request)
    info = factory.getClientInfo(proto.connId)
    assert info is not None and (info.bytes_in, info.bytes_out) == (len(request), len(t.value()))


@pytest.mark.parametrize(("setting", "expected"), [(None, 1), (False, None)])
def test_tcp_nodelay_on_accepted_sockets(setting: bool | None, expected: int | None) -> None:
    """open_tcp_nodelay (default true) sets TCP_NODELAY on every accepted socket."""
    import socket

    settings = {} if setting is None else {"open_tcp_nodelay": setting}
    _, _, t, _ = serve(hello, settings)
    assert t.handle.options.get((socket.IPPROTO_TCP, socket.TCP_NODELAY)) == expected


def test_handler_connection_close_on_http10_keep_alive() -> None:
    """A handler's Connection: close on an HTTP/1.0 keep-alive request: one Connection
    header, saying close, and the connection closes."""

    def handler(request: Request, response: Response) -> None:
        response.header("Connection", "close")
        response.end("bye")

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = t.value().split(b"\r\n\r\n")[0]
    assert head.count(b"Connection:") == 1 and b"Connection: close" in head and t.writeClosed


def test_half_closed_client_gets_its_async_answer_then_the_connection_closes() -> None:
    """A client that half-closes after its request (nc -N) still gets the answer of an
    async handler; then the connection closes."""
    d: defer.Deferred[None] = defer.Deferred()

    async def handler(request: Request, response: Response) -> None:
        await d
        response.end("late")

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    proto.readConnectionLost()
    assert t.value() == b"" and not t.disconnecting
    d.callback(None)
    [(status, headers, body)] = responses(t.value())
    assert (status, body, headers["connection"]) == (200, b"late", "close") and t.disconnecting


def test_unread_output_pauses_reading_and_queued_requests() -> None:
    """A client that pipelines and never reads: once its unsent bytes pass
    buffer_output_size, reading stops and queued requests wait; they are served in order
    once it drains."""
    served: list[str] = []

    def handler(request: Request, response: Response) -> None:
        served.append(request.path)
        response.end(b"x" * 2000)

    _, proto, t, _ = slow_serve(handler, {"buffer_output_size": 4096})
    proto.dataReceived(b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(10)))
    assert served == ["/0", "/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8", "/9"]
    proto.pauseProducing()  # Twisted: the transport's buffer is over its size
    assert t.producerState == "paused"  # we stopped reading
    proto.dataReceived(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")  # already in flight
    assert served[-1] == "/9"
    t.drain()
    assert served[-2:] == ["/a", "/b"] and t.producerState == "producing"


def test_streaming_write_sees_backpressure() -> None:
    """write() returns False once the client has more than buffer_output_size unsent, and
    drained() fires when it has read them."""
    results: list[bool] = []
    waited: list[bool] = []

    async def handler(request: Request, response: Response) -> None:
        while response.write(b"y" * 1000):
            results.append(True)
        results.append(False)
        await response.drained()
        waited.append(True)
        response.end()

    _, proto, t, _ = slow_serve(handler, {"buffer_output_size": 4096})
    proto.pauseProducing()  # the transport's own buffer is full from the first write on
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert results[-1] is False and 3 <= len(results) <= 6 and waited == []
    t.drain()
    assert waited == [True] and t.value().endswith(b"0\r\n\r\n")


def test_linger_with_a_client_that_never_reads_ends_in_time() -> None:
    """After an error response the client neither reads nor closes: the connection is
    aborted once nothing was read for http_send_timeout."""
    _, proto, t, clock = slow_serve(hello, {"http_send_timeout": 3})
    proto.dataReceived(b"BAD\r\n\r\n")
    assert t.writeClosed and not t.aborted
    clock.advance(3)
    assert not t.aborted
    clock.advance(2)
    assert t.aborted


def test_misuse_raises_the_library_errors() -> None:
    """Headers after the head was sent, a bad status, a bad header value: the library's own
    errors, which are also RuntimeError / ValueError."""
    from tx_swoole.errors import HeaderValueError, ResponseStateError

    caught: list[Exception] = []

    def handler(request: Request, response: Response) -> None:
        for attempt in (lambda: response.status(1000), lambda: response.header("X", "a\nb")):
            try:
                attempt()
                response.end()
            except HeaderValueError as e:
                caught.append(e)
        response._headers = ()
        response.write("part")
        try:
            response.header("X-Late", "1")
        except ResponseStateError as e:
            caught.append(e)
        response.end()

    _, proto, t, _ = serve(handler)
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert [type(e).__name__ for e in caught] == [
        "HeaderValueError", "HeaderValueError", "ResponseStateError"
    ]  # fmt: skip
    assert isinstance(caught[0], ValueError) and isinstance(caught[2], RuntimeError)
    assert t.value().endswith(b"4\r\npart\r\n0\r\n\r\n")


def test_per_connection_objects_have_no_dict() -> None:
    """__slots__ do what they say: the HTTP protocol, its core and a response keep no
    per-instance __dict__."""
    from tx_swoole.protocols._http11 import HTTPConnection
    from tx_swoole.protocols.tcp import TCPProtocol

    _, proto, _, _ = serve(hello)
    for obj in (proto, proto.conn, Response(proto, None), TCPProtocol()):  # type: ignore[arg-type]
        assert not hasattr(obj, "__dict__"), type(obj)
    assert isinstance(proto.conn, HTTPConnection)


def test_header_block_cache_is_bounded_and_keeps_the_newest() -> None:
    """Distinct header sets beyond the cache size evict the oldest; the newest stay."""
    from tx_swoole.protocols import _http11_head as head

    for i in range(head.CACHE_SIZE + 100):
        head.header_block(("X-N", str(i)))
    assert len(head._BLOCKS) <= head.CACHE_SIZE
    assert ("X-N", str(head.CACHE_SIZE + 99)) in head._BLOCKS and ("X-N", "0") not in head._BLOCKS


def test_a_response_flag_above_wants_close_would_be_noticed() -> None:
    """respond() reads "no Connection: close" as ``flags < WANTS_CLOSE``: right only while
    WANTS_CLOSE is the highest flag the header block reports."""
    from tx_swoole.protocols import _http11_head as head

    flags = [v for k, v in vars(head).items() if k.isupper() and k in head.__all__ and
             isinstance(v, int) and k not in ("CACHE_SIZE",)]  # fmt: skip
    assert sorted(flags) == [head.HAS_CONTENT_TYPE, head.WANTS_CLOSE]
    for names in (("Connection", "close"), ("Content-Type", "a/b", "Connection", "close")):
        assert head.header_block(names)[1] >= head.WANTS_CLOSE
    assert head.header_block(("Content-Type", "a/b"))[1] < head.WANTS_CLOSE
