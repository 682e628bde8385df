"""Static files: which file a path names (a table of ways out of the root), and the answer
for a file and the request's conditional and range headers."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest

from tx_swoole.protocols._static import content_type, etag, plan, resolve


@pytest.fixture
def root(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "css" / "a.css").write_text("body{}")
    (site / "empty").mkdir()
    (site / "data.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "secret.txt").write_text("no")
    (site / "out").symlink_to(tmp_path / "secret.txt")
    (site / "in").symlink_to(site / "css" / "a.css")
    return site


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/index.html", 200),
        ("/", 200),  # the index file
        ("/css/a.css", 200),
        ("/css/./a.css", 200),
        ("/css//a.css", 200),
        ("/in", 200),  # a symlink that stays inside
        ("/nope.html", 404),
        ("/css/a.css/x", 404),
        ("/empty", 403),  # a directory without index: no listing
        ("/../secret.txt", 403),
        ("/css/../../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/%2E%2E/secret.txt", 403),
        ("/css/%2e%2e%2f%2e%2e%2fsecret.txt", 403),
        ("/..%2fsecret.txt", 403),
        ("/css%2fa.css", 403),  # an encoded slash
        ("/..\\secret.txt", 403),
        ("/%5c..%5csecret.txt", 403),
        ("/index.html%00.txt", 403),
        ("/out", 403),  # a symlink leading out
        ("/%ff", 404),
    ],
)
def test_resolve(root: Path, path: str, status: int) -> None:
    found = resolve(str(root), path)
    assert found is not None and found.status == status, found
    if status == 200:
        assert found.path.startswith(os.path.realpath(root)) and found.stat is not None


def test_symlinks_out_only_when_allowed_and_locations(root: Path) -> None:
    allowed = resolve(str(root), "/out", follow_symlinks=True)
    assert allowed is not None and allowed.status == 200
    assert resolve(str(root), "/api/x", locations=["/css", "/static/"]) is None
    assert resolve(str(root), "/cssx", locations=["/css"]) is None
    found = resolve(str(root), "/css/a.css", locations=["/css"])
    assert found is not None and found.status == 200


def stat(root: Path, name: str = "data.bin") -> os.stat_result:
    return os.stat(root / name)


def test_200_with_validators_and_types(root: Path) -> None:
    st = stat(root)
    p = plan(st, {}, str(root / "data.bin"))
    headers = dict(p.headers)
    assert (p.status, p.offset, p.length) == (200, 0, 1024)
    assert headers["ETag"] == etag(st) and headers["Accept-Ranges"] == "bytes"
    assert headers["Last-Modified"] == formatdate(st.st_mtime, usegmt=True)
    assert headers["Content-Type"] == "application/octet-stream"
    assert content_type("a.css") == "text/css; charset=utf-8"
    assert content_type("x.png") == "image/png"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"if-none-match": "TAG"}, 304),
        ({"if-none-match": "W/TAG"}, 304),
        ({"if-none-match": '"other", TAG'}, 304),
        ({"if-none-match": "*"}, 304),
        ({"if-none-match": '"other"'}, 200),
        ({"if-modified-since": "LATER"}, 304),
        ({"if-modified-since": "EARLIER"}, 200),
        ({"if-modified-since": "not a date"}, 200),
        ({"if-none-match": '"other"', "if-modified-since": "LATER"}, 200),  # the tag decides
    ],
)
def test_conditional_requests(root: Path, headers: dict[str, str], status: int) -> None:
    st = stat(root)
    later, earlier = formatdate(st.st_mtime + 60, usegmt=True), formatdate(0, usegmt=True)
    real = {k: v.replace("TAG", etag(st)).replace("LATER", later).replace("EARLIER", earlier)
            for k, v in headers.items()}  # fmt: skip
    assert plan(st, real).status == status


@pytest.mark.parametrize(
    ("header", "status", "offset", "length", "content_range"),
    [
        ("bytes=0-99", 206, 0, 100, "bytes 0-99/1024"),
        ("bytes=1000-", 206, 1000, 24, "bytes 1000-1023/1024"),
        ("bytes=-10", 206, 1014, 10, "bytes 1014-1023/1024"),
        ("bytes=1000-5000", 206, 1000, 24, "bytes 1000-1023/1024"),
        ("bytes=-5000", 206, 0, 1024, "bytes 0-1023/1024"),
        ("bytes=1024-", 416, 0, 0, "bytes */1024"),
        ("bytes=-0", 416, 0, 0, "bytes */1024"),
        ("bytes=5-1", 200, 0, 1024, None),  # malformed: ignored
        ("bytes=0-1,5-9", 200, 0, 1024, None),  # several: the whole file
        ("items=0-1", 200, 0, 1024, None),
        ("bytes=x-y", 200, 0, 1024, None),
    ],
)
def test_ranges(
    root: Path, header: str, status: int, offset: int, length: int, content_range: str | None
) -> None:
    p = plan(stat(root), {"range": header})
    assert (p.status, p.offset, p.length) == (status, offset, length)
    assert dict(p.headers).get("Content-Range") == content_range


def test_if_range_serves_the_whole_file_once_it_changed(root: Path) -> None:
    st = stat(root)
    fresh = plan(st, {"range": "bytes=0-9", "if-range": etag(st)})
    stale = plan(st, {"range": "bytes=0-9", "if-range": '"old"'})
    dated = plan(st, {"range": "bytes=0-9", "if-range": formatdate(0, usegmt=True)})
    assert (fresh.status, stale.status, dated.status) == (206, 200, 200)


# -- a real server -------------------------------------------------------------------------------
import http.client  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

from tx_swoole.config import parse_config  # noqa: E402
from tx_swoole.errors import ConfigError  # noqa: E402

from .support import ROOT, Twistd, write_config  # noqa: E402


def serve(tmp: Path, site: Path, **settings: Any) -> Twistd:
    cfg = write_config(tmp, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {"worker_num": 0, "enable_static_handler": True,
                        "document_root": str(site), **settings})  # fmt: skip
    return Twistd(cfg, cwd=ROOT)


@pytest.fixture
def site_server(tmp_path: Path, root: Path) -> Iterator[int]:
    with serve(tmp_path, root) as server:
        yield server.port()


def get(port: int, path: str, method: str = "GET", **headers: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def raw(port: int, target: str) -> int:
    """The status for a request target sent as it is (no client-side normalising)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split()[1])


@pytest.mark.integration
def test_files_validators_304_ranges_and_head(site_server: int, root: Path) -> None:
    home = get(site_server, "/")
    assert home.status == 200 and home.body == b"<h1>home</h1>"
    assert home.getheader("Content-Type") == "text/html; charset=utf-8"
    tag = home.getheader("ETag")
    assert tag and home.getheader("Last-Modified") and home.getheader("Accept-Ranges") == "bytes"
    again = get(site_server, "/index.html", **{"If-None-Match": tag})
    assert again.status == 304 and again.body == b"" and again.getheader("Content-Length") is None
    part = get(site_server, "/data.bin", Range="bytes=10-19")
    assert part.status == 206 and part.body == bytes(range(10, 20))
    assert part.getheader("Content-Range") == "bytes 10-19/1024"
    assert get(site_server, "/data.bin", Range="bytes=2000-").status == 416
    head = get(site_server, "/data.bin", "HEAD")
    assert head.status == 200 and head.getheader("Content-Length") == "1024" and head.body == b""
    assert get(site_server, "/data.bin").body == (root / "data.bin").read_bytes()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("target", "status"),
    [("/../secret.txt", 403), ("/%2e%2e/secret.txt", 403), ("/css/..%2f..%2fsecret.txt", 403),
     ("/out", 403), ("/empty", 403), ("/%00", 403), ("/..\\secret.txt", 403)],
)  # fmt: skip
def test_ways_out_of_the_root_are_refused(site_server: int, target: str, status: int) -> None:
    assert raw(site_server, target) == status


@pytest.mark.integration
def test_the_handler_answers_what_is_not_a_file(site_server: int) -> None:
    assert get(site_server, "/nope").body == b"ok"  # no such file: the app's
    assert get(site_server, "/parts").body == b"abc"
    response = get(site_server, "/index.html", "POST")
    assert response.body == b"ok"  # not GET or HEAD: the app's


@pytest.mark.integration
def test_locations_are_the_static_handlers_alone(tmp_path: Path, root: Path) -> None:
    with serve(tmp_path, root, static_handler_locations=["/css"]) as server:
        port = server.port()
        assert get(port, "/css/a.css").body == b"body{}"
        assert get(port, "/css/missing.css").status == 404  # not the app's
        assert get(port, "/index.html").body == b"ok"  # outside the locations: the app's


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"enable_static_handler": True}, "document_root"),
        ({"enable_static_handler": True, "document_root": "/no/such/dir"}, "/no/such/dir"),
        ({"static_handler_locations": ["css"]}, "must start with '/'"),
    ],
)
def test_static_settings_are_checked_before_binding(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"server": {"type": "http", "app": "m:h"}, "settings": settings})


@pytest.mark.integration
def test_a_changed_small_file_is_served_new(tmp_path: Path, root: Path) -> None:
    """Within a second or two (a small file's answer is reused while the clock ticks once),
    the changed file, whole, with its new validators; a conditional request sees it at once."""

    def served_soon(body: bytes) -> Any:
        deadline = time.monotonic() + 10
        while (answer := get(port, "/css/a.css")).body != body:
            assert answer.body in (b"body{}", b"body{color:red}", b"new")  # never a mix
            assert time.monotonic() < deadline, f"still {answer.body!r}"
            time.sleep(0.05)
        return answer

    with serve(tmp_path, root) as server:
        port = server.port()
        old = get(port, "/css/a.css")
        assert old.body == b"body{}"
        (root / "css" / "a.css").write_text("body{color:red}")  # another size
        fresh = get(port, "/css/a.css", **{"If-None-Match": old.getheader("ETag")})
        assert fresh.status == 200 and fresh.body == b"body{color:red}"  # not from memory
        assert served_soon(b"body{color:red}").getheader("ETag") != old.getheader("ETag")
        (root / "css" / "b.css").write_text("new")
        os.replace(root / "css" / "b.css", root / "css" / "a.css")  # another inode
        served_soon(b"new")


@pytest.mark.integration
def test_big_file_to_a_slow_reader_and_a_file_cut_short(tmp_path: Path, root: Path) -> None:
    """A large file goes out with sendfile(2) as the reader drains its socket; a file that
    shrinks while it is sent aborts the connection instead of ending a short body."""
    data = os.urandom(3 * 1024 * 1024)
    (root / "big.bin").write_bytes(data)
    with serve(tmp_path, root, log_level="info") as server:
        port = server.port()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while len(got) < len(data) + 100 and not got.endswith(data):
                chunk = sock.recv(32768)
                if not chunk:
                    break
                got += chunk
                if len(got) < 1024 * 1024:
                    time.sleep(0.001)  # slow at first: the server waits for the socket
            assert got.endswith(data) and b"Content-Length: 3145728" in got
        (root / "huge.bin").write_bytes(data * 20)  # 60 MiB: more than the socket buffers
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            got = sock.recv(65536)
            with open(root / "huge.bin", "r+b") as f:
                f.truncate(1024 * 1024)
            try:
                while chunk := sock.recv(65536):
                    got += chunk
            except ConnectionResetError:
                pass
            body = got.partition(b"\r\n\r\n")[2]
            assert len(body) < len(data)  # cut short, and the connection closed: no desync
        server.wait_for(rb"ended \d+ bytes early; aborted")
