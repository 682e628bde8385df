"""``twistd swoole`` serving HTTP, driven by real clients: http.client, treq, raw sockets."""

from __future__ import annotations

import http.client
import os
import socket
import time

import pytest
import pytest_twisted
import treq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task

from tx_swoole.protocols.http import HTTPFactory, HTTPProtocol, Request, Response
from tx_swoole.transport import listen_tcp

from .support import EXAMPLES, HalfCloseTransport, Twistd, write_config

HELLO = b"<h1>Hello World!</h1>"


@pytest.fixture(scope="module")
def hello_server(tmp_path_factory: pytest.TempPathFactory):
    """The hello example under twistd, on a free port."""
    tmp = tmp_path_factory.mktemp("hello")
    cfg = write_config(
        tmp, {"type": "http", "port": 0, "app": "http_hello:handler"},
        {"worker_num": 0, "package_max_length": 4096, "http_header_max_length": 2048},
    )  # fmt: skip
    with Twistd(cfg, cwd=EXAMPLES) as server:
        yield server, server.port()


_LEFTOVER: dict[int, bytes] = {}


def read_response(sock: socket.socket) -> bytes:
    """Read one response with a Content-Length body (or up to EOF), keeping what follows."""
    data = _LEFTOVER.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [
        int(h.split(b":")[1])
        for h in head.split(b"\r\n")
        if h.lower().startswith(b"content-length")
    ]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        body += sock.recv(65536)
    _LEFTOVER[sock.fileno()] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


@pytest.mark.integration
def test_hello_example_keep_alive_with_http_client(hello_server) -> None:
    """The hello example answers with its headers, many requests on one connection."""
    _, port = hello_server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, HELLO)
        assert r.getheader("E-Tag") == "55829c5b-17" and r.getheader("Accept-Ranges") == "bytes"
        assert r.getheader("Last-Modified") == "Thu, 18 Jun 2015 10:24:27 GMT"
        assert r.getheader("Server") == "tx_swoole" and r.getheader("Date")
    conn.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_hello_example_with_treq(hello_server) -> None:
    """treq (a Twisted client) gets the page."""
    _, port = hello_server
    response = await treq.get(f"http://127.0.0.1:{port}/x?y=1")
    assert response.code == 200 and await treq.content(response) == HELLO


@pytest.mark.integration
def test_pipelined_raw_requests_answered_in_order(hello_server) -> None:
    """Requests pipelined on one socket, with bodies, all get answers in order."""
    _, port = hello_server
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        b"GET / HTTP/1.1\r\n\r\n"
    )
    for _ in range(3):
        assert read_response(s).endswith(HELLO)
    s.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 3000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"b" * 60000, 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"c" * 4096
         + b"\r\n1000\r\n" + b"c" * 4096, 413),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 400),
    ],
    ids=["431", "413-declared", "413-chunked", "400-smuggling", "400-tls-bytes"],
)  # fmt: skip
def test_refused_requests_read_cleanly_by_client(hello_server, raw: bytes, status: int) -> None:
    """The client reads the error status (Connection: close, short body) — no reset — even
    while it is still sending, and the server logs a WARNING with the numbers."""
    server, port = hello_server
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(raw)
    try:
        s.sendall(b"z" * 30000)  # keeps sending after the refusal
    except OSError:
        pass
    response = read_response(s)
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close" in response and response.endswith(
        b"%d" % status + response.split(b"%d" % status, 2)[-1]
    )
    s.settimeout(5)
    while s.recv(65536):  # then an orderly close (FIN), not a reset
        pass
    s.close()
    server.wait_for(rb"\[tx_swoole.http#warning\] %d for 127.0.0.1" % status)


@pytest.mark.integration
def test_http10_keep_alive_and_ab_style(hello_server) -> None:
    """HTTP/1.0 Connection: keep-alive is answered in kind and the connection reused."""
    _, port = hello_server
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    for _ in range(3):
        s.sendall(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: x\r\n\r\n")
        response = read_response(s)
        assert b"Connection: keep-alive" in response and response.endswith(HELLO)
    s.close()


@pytest.mark.integration
def test_server_still_serves_after_garbage(hello_server) -> None:
    """After many garbage connections the worker still answers normal requests."""
    _, port = hello_server
    for junk in (
        b"\x00" * 100,
        b"GET /\r\n",
        b"\r\n\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(junk)
        s.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read() == HELLO


@given(st.lists(st.binary(max_size=200), max_size=6))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_arbitrary_bytes_never_raise_and_server_recovers(chunks: list[bytes]) -> None:
    """Arbitrary bytes never raise out of the protocol; a new connection is served normally."""
    clock = task.Clock()
    factory = HTTPFactory(lambda q, r: r.end(b"ok"), {"http_header_max_length": 512}, reactor=clock)
    proto = factory.buildProtocol(None)
    assert isinstance(proto, HTTPProtocol)
    proto.makeConnection(HalfCloseTransport())
    for chunk in chunks:
        proto.dataReceived(chunk)
    clock.advance(5)
    fresh = factory.buildProtocol(None)
    t = HalfCloseTransport()
    fresh.makeConnection(t)
    fresh.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert t.value().startswith(b"HTTP/1.1 200 OK") and t.value().endswith(b"ok")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_upstream_example_in_a_plain_twisted_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """The treq-based handler relays a fast upstream, answers 504 for a slow one and keeps
    serving other requests meanwhile — all inside one Twisted program (no twistd)."""
    import sys

    sys.path.insert(0, str(EXAMPLES))
    import http_upstream

    async def upstream(request: Request, response: Response) -> None:
        if request.path == "/slow":
            await task.deferLater(reactor, 3, lambda: None)
        response.header("Content-Type", "text/plain")
        response.end("upstream " + request.path)

    up = listen_tcp(0, HTTPFactory(upstream), interface="127.0.0.1")
    monkeypatch.setattr(http_upstream, "UPSTREAM_URL", f"http://127.0.0.1:{up.getHost().port}")
    monkeypatch.setattr(http_upstream, "UPSTREAM_TIMEOUT", 0.5)
    front = listen_tcp(0, HTTPFactory(http_upstream.handler), interface="127.0.0.1")
    base = f"http://127.0.0.1:{front.getHost().port}"
    started = time.monotonic()
    slow = treq.get(base + "/slow")
    fast = await treq.get(base + "/fast")
    assert await treq.text_content(fast) == "upstream /fast"
    assert time.monotonic() - started < 0.5  # not blocked behind /slow
    slow_response = await slow
    assert slow_response.code == 504 and b"timed out" in await treq.content(slow_response)
    await up.stopListening()
    await front.stopListening()
    for c in list(reactor.getDelayedCalls()):  # type: ignore[attr-defined]
        if c.active() and c.getTime() - reactor.seconds() > 1:  # type: ignore[attr-defined]
            c.cancel()
    await task.deferLater(reactor, 0.1, lambda: None)
