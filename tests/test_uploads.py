"""Request bodies that do not live in memory: the sans-IO multipart parser (a table, fed whole,
byte by byte and in odd pieces), uploads streamed to temporary files (limits, cleanup, a client
that goes away), bodies streamed to the handler with flow control, and real clients (curl -F,
http.client) against a real server."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from tx_swoole.errors import MultipartError
from tx_swoole.protocols._multipart import (
    DONE,
    PART_END,
    MultipartParser,
    Part,
    boundary_of,
    header_params,
)
from tx_swoole.protocols.http import Request, Response, streaming

from .support import ROOT, Twistd, write_config
from .test_http_protocol import serve

B = b"----tx7MA4YWxkTrZu0gW"


def multipart(*parts: tuple[str, str | None, bytes], boundary: bytes = B) -> bytes:
    """A multipart/form-data body of (field, filename or None, content) parts."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def parse(body: bytes, pieces: list[int] | None = None, boundary: bytes = B) -> list[Any]:
    """Feed ``body`` in ``pieces`` (sizes; None: whole); the events, contents joined."""
    parser = MultipartParser(boundary)
    events: list[Any] = []
    at = 0
    for size in pieces or [len(body)]:
        events += parser.feed(body[at : at + size])
        at += size
    events += parser.feed(body[at:])
    parser.close()
    joined: list[Any] = []
    for e in events:
        if isinstance(e, bytes) and joined and isinstance(joined[-1], bytes):
            joined[-1] += e
        elif isinstance(e, Part):
            joined.append((e.name, e.filename, e.content_type))
        else:
            joined.append(e)
    return joined


CASES = [
    (multipart(("a", None, b"1")), [("a", None, "text/plain"), b"1", PART_END, DONE]),
    (multipart(("f", "x.bin", b"\r\n--" + B[:-1] + b"\r\n--\r\n")),  # delimiter look-alikes
     [("f", "x.bin", "application/octet-stream"), b"\r\n--" + B[:-1] + b"\r\n--\r\n",
      PART_END, DONE]),
    (multipart(("e", None, b"")), [("e", None, "text/plain"), PART_END, DONE]),
    (b"preamble text\r\n" + multipart(("a", None, b"x")) + b"epilogue",
     [("a", None, "text/plain"), b"x", PART_END, DONE]),
    (multipart(("a", None, b"1"), ("b", "", b""), ("c", "c.txt", b"3" * 1000)),
     [("a", None, "text/plain"), b"1", PART_END, ("b", "", "application/octet-stream"),
      PART_END, ("c", "c.txt", "application/octet-stream"), b"3" * 1000, PART_END, DONE]),
    (b"--" + B + b"  \t\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--" + B + b"--",
     [("a", None, "text/plain"), b"v", PART_END, DONE]),  # padding after a boundary
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_parser_whole_byte_by_byte_and_split(body: bytes, expected: list[Any]) -> None:
    assert parse(body) == expected
    assert parse(body, [1] * len(body)) == expected
    rng = random.Random(len(body))
    for _ in range(20):
        cuts = [rng.randint(1, 40) for _ in range(len(body) // 5 + 1)]
        assert parse(body, cuts) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (multipart(("a", None, b"1"))[:-8], "ended before the closing boundary"),
        (b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + B + b"--",
         "no Content-Disposition"),
        (b"--" + B + b"\r\nContent-Disposition: attachment\r\n\r\nx\r\n--" + B + b"--",
         "not form-data with a name"),
        (b"--" + B + b"\r\nno colon here\r\n\r\nx\r\n--" + B + b"--", "malformed part header"),
        (b"--" + B + b"\r\nX: " + b"h" * 20000, "headers exceed 16384 bytes"),
        (b"--" + B + b"junk\r\n", "unexpected b'junk' after a boundary"),
        (b"--" + B + b"x" * 300, "no CRLF after a boundary"),
        (b"no boundary anywhere", "ended before the closing boundary"),
    ],
)  # fmt: skip
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parse(body)
    with pytest.raises(MultipartError, match=message):
        parse(body, [1] * len(body))


def test_header_params_and_boundary() -> None:
    assert header_params('form-data; name="a;b"; filename="q\\"uote.txt"') == (
        "form-data", {"name": "a;b", "filename": 'q"uote.txt'},
    )  # fmt: skip
    assert header_params("form-data; name=x; filename*=UTF-8''%E2%82%AC.txt")[1] == {
        "name": "x", "filename*": "€.txt",
    }  # fmt: skip
    assert boundary_of('multipart/form-data; boundary="abc def"') == b"abc def"
    assert boundary_of("application/json") is None
    for bad in ("multipart/form-data", "multipart/form-data; boundary=" + "x" * 71):
        with pytest.raises(MultipartError, match="1 to 70 ASCII characters"):
            boundary_of(bad)


def test_the_parser_holds_only_a_boundary_of_content() -> None:
    parser = MultipartParser(B)
    parser.feed(b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n")
    for _ in range(100):
        out = parser.feed(b"z" * 10000)
        assert sum(len(e) for e in out if isinstance(e, bytes)) >= 10000 - len(B) - 4
        assert len(parser._buffer) < len(B) + 4


# -- uploads through the protocol -------------------------------------------------------------
def post(body: bytes, path: str = "/", boundary: bytes = B, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n" + extra + b"\r\n"
        + body
    )  # fmt: skip


class Seen:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.contents: list[bytes] = []

    def handler(self, request: Request, response: Response) -> None:
        self.requests.append(request)
        for uploads in request.files.values():
            for upload in uploads:
                if upload.path:
                    with upload.open() as f:
                        self.contents.append(f.read())
        response.end(repr(sorted(request.form.items())))


def test_upload_reaches_the_handler_on_disk_then_goes(tmp_path: Path) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path)})
    data = os.urandom(200000)
    body = multipart(("title", None, b"caf\xc3\xa9"), ("doc", "a.bin", data),
                     ("doc", "b.txt", b"second"), ("empty", "", b""))  # fmt: skip
    raw = post(body)
    for i in range(0, len(raw), 7000):  # as it arrives
        proto.dataReceived(raw[i : i + 7000])
    assert b"200 OK" in t.value() and "[('title', ['café'])]".encode() in t.value()
    [request] = seen.requests
    a, b = request.files["doc"]
    assert (a.filename, a.size, a.error, a.type) == ("a.bin", 200000, 0, "application/octet-stream")
    assert (b.filename, b.size) == ("b.txt", 6) and request.file("doc") is a
    assert seen.contents == [data, b"second"]
    assert request.file("empty").error == 4 and request.body == b""
    assert list(tmp_path.iterdir()) == []  # removed once the handler was done


def test_moved_upload_is_kept_and_async_handler_reads_first(tmp_path: Path) -> None:
    clock = task.Clock()
    keep = tmp_path / "kept.bin"

    async def handler(request: Request, response: Response) -> None:
        await task.deferLater(clock, 1, lambda: None)
        upload = request.file("f")
        assert os.path.exists(upload.path)  # still there while the handler runs
        upload.move_to(str(keep))
        response.end("moved")

    tmp = tmp_path / "up"
    tmp.mkdir()
    _, proto, t, _ = serve(handler, {"upload_tmp_dir": str(tmp)}, clock=clock)
    proto.dataReceived(post(multipart(("f", "k.bin", b"keep me"))))
    assert len(list(tmp.iterdir())) == 1
    clock.advance(1)
    assert t.value().endswith(b"moved") and keep.read_bytes() == b"keep me"
    assert list(tmp.iterdir()) == []


def test_upload_max_filesize_marks_the_file(tmp_path: Path) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path),
                                          "upload_max_filesize": 1000})  # fmt: skip
    proto.dataReceived(post(multipart(("big", "big.bin", b"x" * 5000), ("ok", "ok.bin", b"y"))))
    big, ok = seen.requests[0].file("big"), seen.requests[0].file("ok")
    assert big.error == 1 and big.path == "" and "exceeds upload_max_filesize=1000" in big.message
    assert ok.error == 0 and seen.contents == [b"y"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "settings", "status"),
    [
        (multipart(*[(f"f{i}", f"{i}.txt", b"1") for i in range(4)]), {"upload_max_files": 3},
         b"413"),
        (multipart(("a", None, b"1"))[:-8] + b"--" + B + b"\r\nbroken", {}, b"400"),
        (b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\n" +
         b"q" * 3000 + b"\r\n--" + B + b"junk", {}, b"400"),
    ],
)  # fmt: skip
def test_bad_uploads_are_refused_and_leave_nothing(
    tmp_path: Path, body: bytes, settings: dict[str, Any], status: bytes
) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path), **settings})
    proto.dataReceived(post(body))
    assert t.value().startswith(b"HTTP/1.1 " + status) and not seen.requests
    assert list(tmp_path.iterdir()) == []


def test_bad_boundary_is_400(tmp_path: Path) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path)})
    proto.dataReceived(post(b"x" * 10, boundary=b""))
    assert t.value().startswith(b"HTTP/1.1 400") and not seen.requests


def test_client_gone_mid_upload_leaves_no_temp_file(tmp_path: Path) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path)})
    raw = post(multipart(("f", "x.bin", b"z" * 100000)))
    proto.dataReceived(raw[: len(raw) // 2])
    assert len(list(tmp_path.iterdir())) == 1
    proto.connectionLost(Failure(ConnectionLost()))
    assert list(tmp_path.iterdir()) == [] and not seen.requests


def test_body_over_package_max_length_mid_upload(tmp_path: Path) -> None:
    seen = Seen()
    _, proto, t, _ = serve(seen.handler, {"upload_tmp_dir": str(tmp_path),
                                          "package_max_length": 10000})  # fmt: skip
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=" + B + b"\r\n\r\n")  # fmt: skip
    part = b"--" + B + b"\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\n"
    proto.dataReceived(head + b"%x\r\n%s\r\n" % (len(part), part))
    for _ in range(5):
        proto.dataReceived(b"1000\r\n" + b"w" * 4096 + b"\r\n")
    assert t.value().startswith(b"HTTP/1.1 413") and not seen.requests
    assert list(tmp_path.iterdir()) == []


# -- bodies streamed to the handler -------------------------------------------------------------
def test_streaming_handler_gets_pieces_as_they_come_with_flow_control() -> None:
    got: list[bytes] = []
    done: list[int] = []

    @streaming
    async def handler(request: Request, response: Response) -> None:
        async for piece in request.stream():
            got.append(piece)
        done.append(sum(map(len, got)))
        response.end(b"%d" % done[0])

    _, proto, t, clock = serve(handler)
    size = 1 << 20
    proto.dataReceived(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    assert got == [] and not done  # called at the head: nothing yet
    proto.dataReceived(b"a" * 1000)
    assert got == [b"a" * 1000]  # the piece reached the handler at once


def test_streaming_pauses_reading_while_the_handler_lags() -> None:
    clock = task.Clock()
    got: list[int] = []

    @streaming
    async def handler(request: Request, response: Response) -> None:
        async for piece in request.stream():
            got.append(len(piece))
            await task.deferLater(clock, 1, lambda: None)  # a slow consumer
        response.end(b"%d" % sum(got))

    _, proto, t, _ = serve(handler, {"http_body_timeout": 5}, clock=clock)
    proto.dataReceived(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (600 * 1024))
    for _ in range(6):
        proto.dataReceived(b"b" * 100 * 1024)
    assert t.producerState == "paused"  # over 256 KiB waiting: reading stopped
    for _ in range(30):  # 30 s of a slow handler: no body timeout meanwhile
        clock.advance(1)
    assert t.producerState == "producing"
    assert t.value().endswith(b"%d" % (600 * 1024)) and b"408" not in t.value()


def test_streaming_when_and_body_limits() -> None:
    seen: list[tuple[str, bytes]] = []

    @streaming(when=lambda request: request.path == "/stream")
    async def handler(request: Request, response: Response) -> None:
        try:
            body = await request.stream().read()
        except Exception as e:  # noqa: BLE001 - the test looks at it
            seen.append((request.path, repr(e).encode()))
            raise
        seen.append((request.path, body))
        response.end(b"ok")

    _, proto, t, clock = serve(handler, {"package_max_length": 1000, "http_body_timeout": 2})
    proto.dataReceived(b"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert seen == [("/whole", b"abc")]  # read whole first, as usual
    proto.dataReceived(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
    proto.dataReceived(b"lo")
    assert seen[-1] == ("/stream", b"hello")
    proto.dataReceived(b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    proto.dataReceived(b"800\r\n" + b"x" * 2048 + b"\r\n")
    assert b"BodyTooLargeError" in seen[-1][1]
    assert t.value().count(b"HTTP/1.1 413") == 1


def test_streaming_body_timeout_and_early_answer() -> None:
    @streaming
    def early(request: Request, response: Response) -> None:
        response.end(b"no thanks")  # answers without reading: the rest is dropped

    _, proto, t, clock = serve(early, {"http_body_timeout": 2})
    proto.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"d" * 1000
    )
    assert t.value().endswith(b"no thanks")
    for _ in range(4):
        proto.dataReceived(b"d" * 74750)  # the rest comes and is dropped; the connection lives
    proto.dataReceived(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.value().count(b"no thanks") == 2

    @streaming
    async def waits(request: Request, response: Response) -> None:
        with pytest.raises(Exception, match="http_body_timeout"):
            await request.stream().read()

    _, proto, t, clock = serve(waits, {"http_body_timeout": 2})
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    clock.advance(1.1)
    clock.advance(1.1)
    clock.advance(1.1)
    assert t.value().startswith(b"HTTP/1.1 408")


# -- real servers, real clients ------------------------------------------------------------------
@pytest.fixture
def upload_server(tmp_path: Path) -> Any:
    tmp = tmp_path / "uploads"
    tmp.mkdir()
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:uploads"},
                       {"worker_num": 0, "upload_tmp_dir": str(tmp),
                        "package_max_length": 64 * 1024 * 1024})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        yield server.port(), tmp


@pytest.mark.integration
def test_curl_form_upload(upload_server: Any, tmp_path: Path) -> None:
    port, tmp = upload_server
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    out = subprocess.run(
        ["curl", "-sS", "-F", "note=hi there", "-F", f"file=@{big}",
         f"http://127.0.0.1:{port}/upload"], capture_output=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr

    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert out.stdout.decode() == f"note=hi there file=big.bin {5 * 1024 * 1024} {digest}\n"
    assert list(tmp.iterdir()) == []


@pytest.mark.integration
def test_aborted_upload_leaves_no_temp_file(upload_server: Any) -> None:
    port, tmp = upload_server
    body = multipart(("file", "x.bin", b"q" * 4000000))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post(body, "/upload")[:2000000])
        deadline = time.monotonic() + 10
        while not list(tmp.iterdir()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    deadline = time.monotonic() + 10
    while list(tmp.iterdir()):  # the server saw the close and removed it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_concurrent_uploads_keep_memory_flat(upload_server: Any) -> None:
    """10 concurrent 20 MiB uploads: the worker's RSS grows by far less than they weigh."""
    port, _ = upload_server
    pid = int(http_get(port, "/pid"))
    before = rss(pid)
    body = multipart(("file", "big.bin", b"m" * (20 * 1024 * 1024)))
    head = post(body, "/upload")[: -len(body)]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(10)]
    chunk = 256 * 1024
    for s in socks:
        s.sendall(head)
    peak = before
    for at in range(0, len(body), chunk):
        for s in socks:
            s.sendall(body[at : at + chunk])
        peak = max(peak, rss(pid))
    answers = []
    for s in socks:
        data = b""
        while not data.endswith(b"\n") or b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
        answers.append(data)
        s.close()
    assert all(b"200 OK" in a and b"file=big.bin 20971520" in a for a in answers)
    assert peak - before < 64 * 1024 * 1024, f"RSS grew {(peak - before) >> 20} MiB"


def http_get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read().decode()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
