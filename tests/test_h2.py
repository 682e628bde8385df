"""HTTP/2: real clients (curl --http2 over TLS and h2c, h2load, headless Chromium loading a page
of many assets), multiplexing and flow control both ways seen from an h2 client on a raw socket,
and the known attacks refused with bounded work (rapid reset, CONTINUATION flood, HPACK bomb,
SETTINGS and PING floods, a zero window, too many streams)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import pytest_twisted
from hyperframe.frame import ContinuationFrame, HeadersFrame
from twisted.internet import reactor, task

from tx_swoole.clients.websocket import connect

from .support import ROOT, Twistd, headless_chromium, make_certificates, write_config
from .test_ws_chat_browser import DevTools

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("h2certs"))


SETTINGS = {"worker_num": 0, "open_http2_protocol": True, "http_send_timeout": 2,
            "package_max_length": 100000, "http2_max_concurrent_streams": 20}  # fmt: skip


@pytest.fixture(scope="module")
def servers(certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The test app with HTTP/2 over TLS (ALPN) and as h2c: (tls_port, plain_port, logs)."""
    tmp = tmp_path_factory.mktemp("h2")
    app = {"type": "http", "port": 0, "app": "tests.http_apps:handler"}
    keys = {"ssl_cert_file": str(certs["server"]), "ssl_key_file": str(certs["server_key"])}
    tls = write_config(tmp, app, {**SETTINGS, **keys}, name="tls.toml")
    site = tmp / "site"
    (site / "static").mkdir(parents=True)
    (site / "static" / "big.css").write_bytes(b"p { margin: 0 }\n" * 20000)  # 320 KB: sendfile
    static = {"enable_static_handler": True, "document_root": str(site),
              "static_handler_locations": ["/static"]}  # fmt: skip
    plain = write_config(tmp, app, {**SETTINGS, **static}, name="plain.toml")
    with Twistd(tls, cwd=ROOT) as a, Twistd(plain, cwd=ROOT) as b:
        yield a.port(), b.port(), (a, b)


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("h2s")
    cfg = write_config(tmp, {"type": "http", "port": 0, "app": "tests.http_apps:streamed"},
                       {**SETTINGS, "package_max_length": 10 * 1024 * 1024})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        yield server.port()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60)


# -- real clients ------------------------------------------------------------------------------
def test_curl_http2_over_tls_and_h2c(servers: Any, certs: dict[str, Path]) -> None:
    tls, plain, _ = servers
    out = curl("-v", "--http2", "--cacert", str(certs["ca"]), f"https://localhost:{tls}/tls")
    assert out.stdout == b"https -" and b"ALPN: server accepted h2" in out.stderr
    assert b"< HTTP/2 200" in out.stderr
    out = curl("-v", "--http2-prior-knowledge", f"http://127.0.0.1:{plain}/big?n=300000")
    assert out.stdout == b"x" * 300000 and b"< HTTP/2 200" in out.stderr
    out = curl("--http2-prior-knowledge", "--data-binary", "@-", f"http://127.0.0.1:{plain}/upload")
    assert out.stdout == b"0"
    body = os.urandom(50000)
    post = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "@-",
         f"http://127.0.0.1:{plain}/upload"], input=body, capture_output=True, timeout=60,
    )  # fmt: skip
    assert post.stdout == b"50000"
    out = curl("--http2-prior-knowledge", "--compressed", "-D", "-",
               f"http://127.0.0.1:{plain}/big?n=5000", "-H", "Accept-Encoding: gzip")  # fmt: skip
    assert b"content-encoding: gzip" in out.stdout and out.stdout.endswith(b"x" * 5000)
    out = curl("-v", "--http1.1", "--cacert", str(certs["ca"]), f"https://localhost:{tls}/")
    assert out.stdout == b"ok" and b"ALPN: server accepted http/1.1" in out.stderr


def test_streamed_writes_sendfile_and_failures(servers: Any) -> None:
    _, plain, (_, server) = servers
    base = f"http://127.0.0.1:{plain}"
    assert curl("--http2-prior-knowledge", f"{base}/parts").stdout == b"abc"
    out = curl("--http2-prior-knowledge", f"{base}/static/big.css")
    assert out.stdout == b"p { margin: 0 }\n" * 20000
    out = curl("--http2-prior-knowledge", "--compressed", f"{base}/static/big.css")
    assert out.stdout == b"p { margin: 0 }\n" * 20000  # compressed as it streams
    out = curl("-v", "--http2-prior-knowledge", "-I", f"{base}/static/big.css")
    assert b"content-length: 320000" in out.stdout
    out = curl("-v", "--http2-prior-knowledge", f"{base}/fail")
    assert b"< HTTP/2 500" in out.stderr
    server.wait_for(rb"handler failed on HTTP/2 connection")


def test_streaming_handler_over_h2_holds_the_window(streaming_server: int) -> None:
    c = Client(streaming_server)
    sid = c.request("/slow", end=False, method="POST")
    sent = 0
    deadline = time.monotonic() + 30
    while sent < 2 * 1024 * 1024:  # far more than the windows: only as the handler reads
        assert time.monotonic() < deadline
        window = min(c.h2.local_flow_control_window(sid), 16384)
        if window <= 0:
            c.poll(0.05)
            continue
        c.h2.send_data(sid, b"s" * window)
        sent += window
        c.flush()
    c.h2.end_stream(sid)
    c.flush()
    c.pump(lambda: c.ended(sid), timeout=30)
    assert bytes(c.bodies[sid]) == str(sent).encode()
    c.close()


def test_streaming_when_over_h2(tmp_path: Path) -> None:
    """A handler that streams some requests' bodies gets the others whole over HTTP/2 too."""
    app = {"type": "http", "port": 0, "app": "tests.http_apps:streamed_some"}
    cfg = write_config(tmp_path, app, SETTINGS)
    with Twistd(cfg, cwd=ROOT) as server:
        base = f"http://127.0.0.1:{server.port()}"
        for path, answer in (("/stream", b"streamed 5000"), ("/other", b"whole 5000")):
            out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "@-",
                                  base + path], input=b"b" * 5000, capture_output=True,
                                 timeout=60)  # fmt: skip
            assert out.stdout == answer, out


def test_h2load_all_answered(servers: Any) -> None:
    tls, plain, _ = servers
    for url in (f"https://127.0.0.1:{tls}/", f"http://127.0.0.1:{plain}/"):
        out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "10", url],
                             capture_output=True, timeout=120).stdout  # fmt: skip
        assert b"2000 succeeded, 0 failed" in out and b"2000 2xx" in out, out


# -- an h2 client on a raw socket -----------------------------------------------------------------
class Client:
    """A blocking h2 client: send with ``h2``, pump ``events()`` until a condition holds."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.flush()
        self.seen: list[Any] = []
        self.bodies: dict[int, bytearray] = {}
        self.status: dict[int, str] = {}
        self.closed = False

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, end: bool = True, method: str = "GET",
                extra: list[tuple[str, str]] | None = None, flush: bool = True) -> int:  # fmt: skip
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http"),
                   (":authority", "localhost"), *(extra or [])]  # fmt: skip
        self.h2.send_headers(sid, headers, end_stream=end)
        if flush:
            self.flush()
        return sid

    def pump(self, until: Any, timeout: float = 10.0, ack: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out; saw {self.seen[-5:]}"
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if self.sock.gettimeout() != 10:
                    return  # (poll)
                data = b""
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.h2.receive_data(data):
                self.seen.append(event)
                if isinstance(event, h2.events.ResponseReceived):
                    self.status[event.stream_id] = dict(event.headers)[":status"]
                elif isinstance(event, h2.events.DataReceived):
                    self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if ack:
                        self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                          event.stream_id)  # fmt: skip
            self.flush()

    def poll(self, seconds: float) -> None:
        """Take in what arrives within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.pump(lambda: False, timeout=seconds * 2)
        except (AssertionError, TimeoutError):
            pass
        finally:
            self.sock.settimeout(10)

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
                   and e.stream_id == sid for e in self.seen)  # fmt: skip

    def goaway(self) -> Any:
        found = [e for e in self.seen if isinstance(e, h2.events.ConnectionTerminated)]
        return found[0] if found else None

    def close(self) -> None:
        self.sock.close()


def test_streams_are_multiplexed(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain)
    slow = c.request("/late")  # 0.2 s
    fast = [c.request(f"/big?n={n}") for n in (10, 20, 30)]
    c.pump(lambda: all(c.ended(s) for s in fast))
    assert not c.ended(slow)  # the slow one did not hold the others back
    c.pump(lambda: c.ended(slow))
    assert bytes(c.bodies[slow]) == b"late"
    assert [len(c.bodies[s]) for s in fast] == [10, 20, 30]
    c.close()


def test_outbound_flow_control_waits_for_the_window(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    sid = c.request("/big?n=50000")
    c.pump(lambda: len(c.bodies.get(sid, b"")) >= 1000, ack=False)
    time.sleep(0.3)  # nothing more comes while the window is shut
    c.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        c.sock.recv(65536)
    c.sock.settimeout(10)
    assert len(c.bodies[sid]) == 1000
    c.h2.increment_flow_control_window(100000, stream_id=sid)
    c.flush()
    c.pump(lambda: c.ended(sid))
    assert bytes(c.bodies[sid]) == b"x" * 50000
    c.close()


def test_zero_window_stall_is_reset_after_send_timeout(servers: Any) -> None:
    _, plain, (_, server) = servers
    c = Client(plain, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = c.request("/big?n=10000")
    c.pump(lambda: c.ended(sid), timeout=15, ack=False)
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in c.seen)
    server.wait_for(rb"window stayed shut for http_send_timeout=2.0s; reset")
    c.close()


def test_body_over_package_max_length_is_413_per_stream(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain)
    big = c.request("/upload", end=False, method="POST")
    for _ in range(10):  # 160 KB against package_max_length = 100000
        if c.ended(big):
            break
        try:
            c.h2.send_data(big, b"y" * 16000)
        except Exception:  # noqa: BLE001 - the window (the server acknowledges as it reads)
            c.poll(0.2)
            continue
        c.flush()
        c.poll(0.05)
    ok = c.request("/big?n=5")
    c.pump(lambda: c.ended(ok) and c.ended(big))
    assert c.status[big] == "413" and bytes(c.bodies[ok]) == b"xxxxx"
    c.close()


def test_rapid_reset_closes_with_enhance_your_calm(servers: Any) -> None:
    _, plain, (_, server) = servers
    c = Client(plain)
    for _ in range(400):  # in one write: the server reads it all before it closes
        sid = c.request("/late", flush=False)
        c.h2.reset_stream(sid)
    c.flush()
    c.pump(lambda: c.goaway() is not None or c.closed)
    assert c.goaway() is not None and c.goaway().error_code == 11  # ENHANCE_YOUR_CALM
    server.wait_for(rb"rapid stream resets; closed with ENHANCE_YOUR_CALM")
    c.close()
    again = Client(plain)
    sid = again.request("/big?n=3")
    again.pump(lambda: again.ended(sid))
    assert bytes(again.bodies[sid]) == b"xxx"
    again.close()


def test_ping_and_settings_floods(servers: Any) -> None:
    _, plain, (_, server) = servers
    for flood in ("ping", "settings"):
        c = Client(plain)
        for i in range(1200):
            if flood == "ping":
                c.h2.ping(i.to_bytes(8, "big"))
            else:
                c.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        c.flush()
        c.pump(lambda c=c: c.goaway() is not None or c.closed, timeout=20)
        assert c.goaway() is not None and c.goaway().error_code == 11
        c.close()
    server.wait_for(rb"PING or SETTINGS flood", count=2)


def test_continuation_flood_is_refused(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain)
    sid = c.h2.get_next_available_stream_id()
    first = HeadersFrame(sid)
    first.data = c.h2.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http")])
    raw = first.serialize()
    for _ in range(200):
        more = ContinuationFrame(sid)
        more.data = c.h2.encoder.encode([("x-flood", "a" * 100)])
        raw += more.serialize()
    try:
        c.sock.sendall(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while chunk := c.sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    assert b"\x07" in data  # a GOAWAY frame type among what came back, then the close
    c.close()


def test_hpack_bomb_and_header_list_size(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain)
    # one big header into the client's dynamic table, then referenced again and again: small on
    # the wire, huge decoded
    sid = c.request("/", extra=[("x-bomb", "b" * 4000)])
    c.pump(lambda: c.ended(sid) or c.closed or c.goaway() is not None)
    sid2 = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid2, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                             (":authority", "x"), *[("x-bomb", "b" * 4000)] * 50],
                      end_stream=True)  # fmt: skip
    c.flush()
    c.pump(lambda: c.goaway() is not None or c.closed)
    assert c.goaway() is not None or c.closed
    c.close()


def test_too_many_streams(servers: Any) -> None:
    _, plain, _ = servers
    c = Client(plain)
    c.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.seen))
    assert c.h2.remote_settings.max_concurrent_streams == 20
    raw = b""
    for sid in range(1, 52, 2):  # 26 streams left open: a client that ignores the limit
        frame = HeadersFrame(sid)
        frame.data = c.h2.encoder.encode([(":method", "POST"), (":path", "/late"),
                                          (":scheme", "http"), (":authority", "x")])  # fmt: skip
        frame.flags.add("END_HEADERS")
        raw += frame.serialize()
    c.sock.sendall(raw)
    c.pump(lambda: c.goaway() is not None or c.closed)
    assert c.goaway() is not None
    c.close()


def test_shutdown_says_goaway(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       SETTINGS)  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        c = Client(server.port())
        sid = c.request("/late")
        c.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.seen))
        server.signal(signal.SIGTERM)
        c.pump(lambda: c.goaway() is not None or c.closed, timeout=15)
        assert bytes(c.bodies[sid]) == b"late"  # answered first
        assert c.goaway() is not None
        c.close()
        assert server.proc.wait(15) == 0


def test_idle_connection_goes_away(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {**SETTINGS, "http_keepalive_timeout": 1})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        c = Client(server.port())
        sid = c.request("/")
        c.pump(lambda: c.ended(sid))
        started = time.monotonic()
        c.pump(lambda: c.goaway() is not None or c.closed, timeout=15)
        assert c.goaway() is not None and time.monotonic() - started < 10
        c.close()


def test_multipart_upload_over_h2(servers: Any, tmp_path: Path) -> None:
    _, plain, _ = servers
    f = tmp_path / "doc.txt"
    f.write_bytes(b"upload over h2\n" * 100)
    out = curl("--http2-prior-knowledge", "-F", "note=n", "-F", f"doc=@{f}",
               f"http://127.0.0.1:{plain}/upload")  # fmt: skip
    assert out.stdout == b"0"  # (the test app's /upload counts the raw body: none was kept)


# -- a browser ---------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_chromium_loads_a_page_of_many_assets_over_h2(
    certs: dict[str, Path], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    assets = [f"a{i}.js" for i in range(40)]
    for i, name in enumerate(assets):
        (site / name).write_text("window.loaded = (window.loaded || 0) + 1;\n" + f"// {i}\n" * 50)
    (site / "index.html").write_text(
        "<!doctype html><title>many</title>"
        + "".join(f'<script src="/{name}"></script>' for name in assets)
    )
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {"worker_num": 0, "open_http2_protocol": True, "enable_static_handler": True,
                        "document_root": str(site), "ssl_cert_file": str(certs["server"]),
                        "ssl_key_file": str(certs["server_key"])})  # fmt: skip
    browser = headless_chromium(tmp_path / "profile", "--ignore-certificate-errors")
    with Twistd(cfg, cwd=ROOT) as server, browser as url:
        port = server.port()
        tools = DevTools(await connect(url, max_message=1 << 24))
        tab = await tools.tab(f"https://localhost:{port}/")
        assert await tools.wait(tab, "window.loaded === 40") is True
        protocols = await tools.js(tab, "JSON.stringify(performance.getEntriesByType('resource')"
                                        ".map(e => e.nextHopProtocol))")  # fmt: skip
        seen = json.loads(protocols)  # the 40 scripts (and the favicon, when it was asked)
        assert len(seen) >= 40 and set(seen) == {"h2"}
        nav = await tools.js(tab, "performance.getEntriesByType('navigation')[0].nextHopProtocol")
        assert nav == "h2"
        await tools.ws.close()
        await task.deferLater(reactor, 0, lambda: None)
