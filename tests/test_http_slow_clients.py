"""Slow, half-closing and non-reading clients against a real ``twistd swoole`` HTTP server.

The server runs with small socket buffers, so what a client does not read stays in the
server's own buffers, where its timeouts and limits must hold.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .support import ROOT, Twistd, write_config

pytestmark = pytest.mark.integration
SETTINGS = {
    "worker_num": 0, "http_keepalive_timeout": 1, "http_header_timeout": 2,
    "http_send_timeout": 3, "socket_buffer_size": 16384, "buffer_output_size": 1 << 20,
    "package_max_length": 1 << 20,
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twistd, int]]:
    cfg = write_config(
        tmp_path_factory.mktemp("slow"),
        {"type": "http", "port": 0, "app": "tests.http_apps:handler"}, SETTINGS,
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        yield twistd, twistd.port()


def connect(port: int, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket, pace: float = 0.0, size: int = 65536) -> bytes:
    """Read until EOF (or a reset after data), ``size`` bytes every ``pace`` seconds."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(size)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
        if pace:
            time.sleep(pace)
    return bytes(out)


def read_response(sock: socket.socket, pace: float = 0.0) -> tuple[bytes, bytes]:
    """One response with a Content-Length body, read ``pace``-slowly; (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before the head: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"EOF after {len(body)} of {length} body bytes"
        body += chunk
        if pace:
            time.sleep(pace)
    return head, body


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server closes or resets the connection, without reading from it."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


def test_slow_upload_is_answered(server: tuple[Twistd, int]) -> None:
    """An upload trickling in for longer than http_keepalive_timeout (100 bytes every
    0.2 s for 4 s, timeout 1 s) is read to its end and answered."""
    _, port = server
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nContent-Length: 2000\r\n\r\n")
        for _ in range(20):
            time.sleep(0.2)
            sock.sendall(b"u" * 100)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body == b"2000"


def test_slow_download_is_not_cut(server: tuple[Twistd, int]) -> None:
    """A 4 MiB response read slowly (about 3 s, keep-alive timeout 1 s) arrives whole."""
    _, port = server
    with connect(port, rcvbuf=16384) as sock:
        sock.sendall(b"GET /big?n=4194304 HTTP/1.1\r\n\r\n")
        head, body = read_response(sock, pace=0.05)
    assert head.startswith(b"HTTP/1.1 200") and len(body) == 4194304


def test_accepted_sockets_have_nagle_off(server: tuple[Twistd, int]) -> None:
    """open_tcp_nodelay is on by default: the handler's own socket has TCP_NODELAY, so
    write(); write(); end() goes out without Nagle's delay."""
    _, port = server
    with connect(port) as sock:
        sock.sendall(b"GET /nodelay HTTP/1.1\r\n\r\n")
        assert read_response(sock)[1] != b"0"
        sock.sendall(b"GET /parts HTTP/1.1\r\n\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(65536)
    assert data.endswith(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")


@pytest.mark.parametrize(("target", "size"), [(b"/late", 4), (b"/big?n=4194304", 4194304)])
def test_half_closed_client_gets_everything(
    server: tuple[Twistd, int], target: bytes, size: int
) -> None:
    """A client that shuts down its sending side after the request (nc -N) gets the whole
    answer, an async one or 4 MiB read slowly, then the server closes."""
    _, port = server
    with connect(port, rcvbuf=16384) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\n\r\n" % target)
        sock.shutdown(socket.SHUT_WR)
        data = read_all(sock, pace=0.02 if size > 4 else 0.0)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == size
    if target == b"/late":  # answered after the half-close: says it closes
        assert b"Connection: close" in head


def test_pipelining_client_that_never_reads_cannot_grow_the_worker(
    server: tuple[Twistd, int],
) -> None:
    """A client pipelining requests for 20 kB responses and reading none: the server stops
    reading once buffer_output_size is unsent; its memory stays bounded and it goes on
    serving others."""
    twistd, port = server
    before = rss_kib(twistd.proc.pid)
    request = b"GET /big?n=20000 HTTP/1.1\r\n\r\n"
    sent = 0
    with connect(port, rcvbuf=16384) as sock:
        sock.setblocking(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += sock.send(request * 64)
            except BlockingIOError:
                select.select([], [sock], [], 0.1)
        grown = rss_kib(twistd.proc.pid) - before
        with connect(port) as other:
            other.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert read_response(other)[1] == b"ok"
    asked_mib = sent // len(request) * 20000 / 2**20
    assert grown < 48 * 1024, f"worker grew {grown} KiB for {asked_mib:.0f} MiB of responses"


def test_closing_client_that_never_reads_is_closed_in_time(server: tuple[Twistd, int]) -> None:
    """Big responses pipelined before a bad request, never read: after the error the
    connection does not linger for ever; it ends once nothing was read for
    http_send_timeout (3 s)."""
    _, port = server
    with connect(port, rcvbuf=16384) as sock:
        sock.sendall(b"GET /big?n=1048576 HTTP/1.1\r\n\r\n" * 3 + b"NOT HTTP\r\n\r\n")
        assert closed_by_server(sock, timeout=10)


def test_trickled_blank_lines_get_408(server: tuple[Twistd, int]) -> None:
    """Blank lines trickled before a request count as its head: 408 after
    http_header_timeout, not a reset at the keep-alive timeout."""
    _, port = server
    with connect(port) as sock:
        answer = b""
        for _ in range(40):
            try:
                sock.sendall(b"\r\n")
            except OSError:
                break
            ready, _, _ = select.select([sock], [], [], 0.25)
            if ready:
                answer = read_all(sock)
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


def test_server_still_answers(server: tuple[Twistd, int]) -> Any:
    """After all the above, a plain request is answered."""
    _, port = server
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_response(sock)[1] == b"ok"
