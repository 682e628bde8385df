"""Response compression: the Accept-Encoding choice (a table), which responses are
compressed, streamed bodies compressed as they stream, static files, and real clients (curl
--compressed, http.client)."""

from __future__ import annotations

import gzip
import http.client
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from tx_swoole.protocols._compress import (
    NOT_COMPRESSIBLE,
    Encoder,
    accepted_coding,
    compress_plan,
    compressible,
)
from tx_swoole.protocols.http import Request, Response

from .support import ROOT, Twistd, write_config
from .test_http_protocol import serve

TEXT = b"compress me, " * 100


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (b"gzip", b"gzip"),
        (b"gzip, deflate, br", b"gzip"),
        (b"GZIP", b"gzip"),
        (b"x-gzip", b"gzip"),
        (b"deflate", b"deflate"),
        (b"br", None),
        (b"identity", None),
        (b"gzip;q=0", None),
        (b"gzip;q=0, deflate", b"deflate"),
        (b"gzip;q=0.5, deflate;q=0.8", b"deflate"),
        (b"deflate;q=0.5, gzip;q=0.5", b"gzip"),  # a tie: gzip
        (b"*", b"gzip"),
        (b"*;q=0", None),
        (b"gzip;q=0, *", None),  # gzip named: * does not bring it back
        (b"gzip; q=1.0", b"gzip"),
        (b"gzip;q=nonsense", None),
        (b"gzip;q=7", None),
        (b"", None),
        (b",,,;;;", None),
    ],
)
def test_accepted_coding(header: bytes, coding: bytes | None) -> None:
    assert accepted_coding(header) == coding


@pytest.mark.parametrize(
    ("media", "yes"),
    [
        ("text/html", True), ("text/css; charset=utf-8", True), ("Application/JSON", True),
        ("application/javascript", True), ("image/svg+xml", True), ("image/png", False),
        ("application/octet-stream", False), ("video/mp4", False), (b"text/plain", True),
    ],
)  # fmt: skip
def test_compressible_types(media: str | bytes, yes: bool) -> None:
    assert compressible(media) is yes


def test_plan_from_the_handlers_headers() -> None:
    assert compress_plan(()) == -1  # text/html by default, no ETag
    assert compress_plan(("ETag", '"x"', "Content-Type", "text/plain")) == 1
    assert compress_plan(("Content-Type", "image/png")) == NOT_COMPRESSIBLE
    assert compress_plan((b"Content-Encoding", b"br")) == NOT_COMPRESSIBLE
    assert compress_plan(("Content-Type", "application/x-mine"), ("application/x-mine",)) == -1


def test_encoder_streams_flushed_pieces() -> None:
    for coding, wbits in ((b"gzip", 31), (b"deflate", 15)):
        enc, dec = Encoder(coding, 1), zlib.decompressobj(wbits)
        for piece in (b"first ", b"second " * 50, b"third"):
            assert dec.decompress(enc.chunk(piece)) == piece  # each piece decodes at once
        assert dec.decompress(enc.finish(b"!")) == b"!" and dec.eof


# -- the protocol: which responses ------------------------------------------------------------
def answer(handler: Any, head: bytes, settings: dict[str, Any] | None = None) -> bytes:
    _, proto, t, _ = serve(handler, settings)
    proto.dataReceived(head)
    return bytes(t.value())


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        headers[k.lower()] = headers[k.lower()] + ", " + v if k.lower() in headers else v
    return int(lines[0].split()[1]), headers, body


def text(request: Request, response: Response) -> None:
    if request.path == "/png":
        response.header("Content-Type", "image/png")
    elif request.path == "/encoded":
        response.header("Content-Encoding", "br")
    elif request.path == "/etag":
        response.header("ETag", '"v1"')
    elif request.path == "/206":
        response.status(206)
    elif request.path == "/small":
        return response.end(b"tiny")  # type: ignore[func-returns-value]
    response.end(TEXT)


GZIP = b"GET /%s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate\r\n\r\n"


def test_gzip_when_accepted_with_vary_and_length() -> None:
    status, headers, body = split(answer(text, GZIP % b""))
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) < len(TEXT)
    assert gzip.decompress(body) == TEXT


def test_repeated_accept_encoding_fields_are_joined() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\naccept-encoding: deflate\r\n\r\n"
    _, headers, body = split(answer(text, head))
    assert headers["content-encoding"] == "deflate" and zlib.decompress(body) == TEXT


@pytest.mark.parametrize(
    ("path", "vary"),
    [(b"png", False), (b"encoded", False), (b"206", False), (b"small", False)],
)
def test_not_compressed(path: bytes, vary: bool) -> None:
    _, headers, body = split(answer(text, GZIP % path))
    assert "content-encoding" not in headers or headers["content-encoding"] == "br"
    assert ("vary" in headers) is vary
    assert body in (TEXT, b"tiny")


def test_identity_when_not_accepted_or_off() -> None:
    _, headers, body = split(answer(text, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert body == TEXT and "content-encoding" not in headers and "vary" not in headers
    head = b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0\r\n\r\n"
    _, headers, body = split(answer(text, head))
    assert body == TEXT and headers["vary"] == "Accept-Encoding"  # could have been
    _, headers, body = split(answer(text, GZIP % b"", {"http_compression": False}))
    assert body == TEXT and "content-encoding" not in headers


def test_head_is_never_compressed() -> None:
    _, headers, body = split(answer(text, GZIP.replace(b"GET", b"HEAD") % b""))
    assert body == b"" and "content-encoding" not in headers
    assert headers["content-length"] == str(len(TEXT))


def test_etag_made_weak_and_level_and_min_length() -> None:
    _, headers, body = split(answer(text, GZIP % b"etag", {"http_compression_level": 9}))
    assert headers["etag"] == 'W/"v1"' and gzip.decompress(body) == TEXT
    _, headers, body = split(answer(text, GZIP % b"small", {"http_compression_min_length": 1}))
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == b"tiny"


def test_streamed_body_is_compressed_as_it_streams() -> None:
    """Each write goes out compressed and flushed: the client can read it before the end."""
    clock = task.Clock()
    holder: list[Response] = []

    def streaming(request: Request, response: Response) -> Any:
        response.header("Content-Type", "application/json")
        response.write(b'{"a": ' + b"1" * 500)
        holder.append(response)
        return task.deferLater(clock, 1, response.end, b"}")

    _, proto, t, _ = serve(streaming, clock=clock)
    proto.dataReceived(GZIP % b"")
    head, _, chunked = bytes(t.value()).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Encoding: gzip" in head
    size, _, rest = chunked.partition(b"\r\n")
    dec = zlib.decompressobj(31)
    assert dec.decompress(rest[: int(size, 16)]) == b'{"a": ' + b"1" * 500  # before the end
    clock.advance(1)
    tail = bytes(t.value())[len(head) + 4 + len(chunked) :]
    size, _, rest = tail.partition(b"\r\n")
    assert dec.decompress(rest[: int(size, 16)]) == b"}" and dec.eof
    assert tail.endswith(b"0\r\n\r\n")


# -- real servers and clients -------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "app.js").write_bytes(b"console.log('hello');\n" * 20000)  # 440 KiB: sendfile
    (root / "small.css").write_bytes(b"body { color: red }\n" * 100)
    (root / "logo.png").write_bytes(bytes(range(256)) * 40)
    return root


@pytest.mark.integration
def test_static_files_and_curl_compressed(tmp_path: Path, site: Path) -> None:
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {"worker_num": 0, "enable_static_handler": True,
                        "document_root": str(site)})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = server.port()
        for name in ("app.js", "small.css"):
            out = subprocess.run(
                ["curl", "-sS", "--compressed", "-D", "-", f"http://127.0.0.1:{port}/{name}"],
                capture_output=True, timeout=30,
            )  # fmt: skip
            head, _, body = out.stdout.partition(b"\r\n\r\n")
            assert body == (site / name).read_bytes(), name
            assert b"Content-Encoding: gzip" in head and b"Vary: Accept-Encoding" in head

        def get(path: str, **headers: str) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.body = r.read()
            conn.close()
            return r

        big = get("/app.js", **{"Accept-Encoding": "gzip"})
        assert big.getheader("Transfer-Encoding") == "chunked"  # streamed: no length ahead
        assert gzip.decompress(big.body) == (site / "app.js").read_bytes()
        tag = big.getheader("ETag")
        assert tag.startswith('W/"')
        assert get("/app.js", **{"Accept-Encoding": "gzip", "If-None-Match": tag}).status == 304
        part = get("/app.js", **{"Accept-Encoding": "gzip", "Range": "bytes=0-9"})
        assert part.status == 206 and part.body == b"console.lo"
        assert part.getheader("Content-Encoding") is None
        png = get("/logo.png", **{"Accept-Encoding": "gzip"})
        assert png.getheader("Content-Encoding") is None and len(png.body) == 10240
        plain = get("/app.js")
        assert plain.getheader("Content-Encoding") is None
        assert plain.body == (site / "app.js").read_bytes()
