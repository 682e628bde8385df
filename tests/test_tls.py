"""TLS on every server type, with real clients: Python's ``ssl``, ``curl --cacert``,
``openssl s_client``, ``websockets``; bad files stop twistd before it binds; client
certificates reach the app; a reload serves renewed certificates; a handshake that never ends is
closed by the header timeout."""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory, Protocol
from websockets.sync.client import connect as ws_connect

from tx_swoole.config import parse_config
from tx_swoole.errors import ConfigError

from .support import ROOT, HTTPLoad, Twistd, make_certificates, write_config
from .test_multiprocess import ready_status, reloads_under_load, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def client_context(certs: dict[str, Path], client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if client_cert:
        ctx.load_cert_chain(str(certs["client"]), str(certs["client_key"]))
    return ctx


def tls_settings(certs: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"worker_num": 0, "ssl_cert_file": str(certs["server"]),
            "ssl_key_file": str(certs["server_key"]), **more}  # fmt: skip


@pytest.fixture(scope="module")
def https(certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The test HTTP app over TLS, client certificates asked for but optional."""
    tmp = tmp_path_factory.mktemp("https")
    cfg = write_config(tmp, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       tls_settings(certs, ssl_client_cert_file=str(certs["ca"]),
                                    http_header_timeout=2))  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        yield server, server.port()


def get(port: int, path: str, ctx: ssl.SSLContext, host: str = "localhost") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# -- config --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssl_cert_file": "missing.pem"}, r"ssl_cert_file = '.*missing.pem': cannot read it"),
        ({"ssl_key_file": "other_key.pem"}, r"ssl_key_file = .*: the key does not match"),
        ({"ssl_key_file": "ca.pem"}, r"not a PEM certificate and its private key"),
        ({"ssl_ciphers": "NOT-A-CIPHER"}, r"ssl_ciphers = 'NOT-A-CIPHER': OpenSSL knows none of"),
        ({"ssl_verify_peer": True}, r"ssl_verify_peer = true needs ssl_client_cert_file"),
        ({"ssl_client_cert_file": "nope.pem"}, r"ssl_client_cert_file = '.*nope.pem': cannot"),
        ({"ssl_protocols": ["TLSv1.1"]}, r"ssl_protocols = \['TLSv1.1'\]: name one or more of"),
        ({"ssl_cert_file": "", "ssl_key_file": "server_key.pem"}, r"needs ssl_cert_file"),
    ],
)
def test_bad_tls_settings_are_config_errors(certs: dict[str, Path], change: dict[str, Any],
                                            message: str) -> None:  # fmt: skip
    settings = {"ssl_cert_file": "server.pem", "ssl_key_file": "server_key.pem", **change}
    with pytest.raises(ConfigError, match=message):
        parse_config({"server": {"type": "http", "app": "a:b"}, "settings": settings},
                     base_dir=str(certs["ca"].parent))  # fmt: skip


def test_relative_paths_are_the_config_files(certs: dict[str, Path]) -> None:
    config = parse_config({"server": {"type": "http", "app": "a:b"},
                           "settings": {"ssl_cert_file": "server.pem",
                                        "ssl_key_file": "server_key.pem"}},
                          base_dir=str(certs["ca"].parent))  # fmt: skip
    assert config.settings.ssl_cert_file == str(certs["server"])


def test_mismatched_key_stops_twistd_before_binding(certs: dict[str, Path],
                                                    tmp_path: Path) -> None:  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = write_config(tmp_path, {"type": "http", "port": port, "app": "tests.http_apps:handler"},
                       tls_settings(certs, ssl_key_file=str(certs["other_key"])))  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        assert server.proc.wait(30) != 0
        server.wait_for(rb"the key does not match the certificate")
        assert b"serving" not in server.output
    with socket.socket() as probe:  # nothing was bound
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# -- HTTPS -----------------------------------------------------------------------------------
def test_python_ssl_client_keep_alive(https: Any, certs: dict[str, Path]) -> None:
    _, port = https
    conn = http.client.HTTPSConnection("localhost", port, context=client_context(certs),
                                       timeout=10)  # fmt: skip
    for n in (10, 200000, 5):  # a response larger than a TLS record and the socket buffer
        conn.request("GET", f"/big?n={n}")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"x" * n)
    body = b"u" * 300000
    conn.request("POST", "/upload", body=body)
    assert conn.getresponse().read() == b"300000"
    assert conn.sock.version() == "TLSv1.3"
    assert conn.sock.selected_alpn_protocol() is None  # not offered by http.client
    conn.close()


def test_curl_cacert_and_alpn(https: Any, certs: dict[str, Path]) -> None:
    _, port = https
    out = subprocess.run(
        ["curl", "-sS", "-v", "--cacert", str(certs["ca"]), f"https://localhost:{port}/tls"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"https -"
    assert b"ALPN: server accepted http/1.1" in out.stderr


def test_openssl_s_client_protocol_floor(https: Any) -> None:
    _, port = https

    def handshake(*flags: str) -> bytes:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags],
            input=b"", capture_output=True, timeout=30,
        ).stdout  # fmt: skip

    assert b"Protocol  : TLSv1.2" in handshake("-tls1_2")
    assert b"TLSv1.3" in handshake("-tls1_3")
    refused = handshake("-tls1_1")  # TLS 1.2 and newer only, by default
    assert b"Cipher is (NONE)" in refused or b"Protocol  : TLSv1.1" not in refused


def test_client_certificate_reaches_the_handler(https: Any, certs: dict[str, Path]) -> None:
    _, port = https
    assert get(port, "/tls", client_context(certs, client_cert=True)) == (200, b"https alice")
    assert get(port, "/tls", client_context(certs)) == (200, b"https -")  # optional here


def test_plain_http_to_https_port_is_told(https: Any) -> None:
    _, port = https
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 400 and b"plain HTTP request was sent to an HTTPS port" in r.read()


def test_handshake_that_never_ends_is_closed_by_header_timeout(
    https: Any, certs: dict[str, Path]
) -> None:
    server, port = https
    with socket.create_connection(("127.0.0.1", port), timeout=15) as silent, \
            socket.create_connection(("127.0.0.1", port), timeout=15) as partial:  # fmt: skip
        partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
        started = time.monotonic()
        for sock in (silent, partial):
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 12
    server.wait_for(rb"not done within 2.0s \(http_header_timeout\)", count=2)
    assert get(port, "/", client_context(certs)) == (200, b"ok")  # still serving


def test_garbage_handshakes_never_hurt_the_worker(https: Any, certs: dict[str, Path]) -> None:
    _, port = https
    for junk in (b"\x16\x03\x01\x00\x05hello", b"\x16" * 5000, b"\x00" * 100, bytes(range(256))):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(junk)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    assert get(port, "/", client_context(certs)) == (200, b"ok")


def test_required_client_certificate(certs: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       tls_settings(certs, ssl_verify_peer=True,
                                    ssl_client_cert_file=str(certs["ca"])))  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = server.port()
        assert get(port, "/tls", client_context(certs, client_cert=True)) == (200, b"https alice")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(port, "/tls", client_context(certs))
        server.wait_for(
            rb"PEER_DID_NOT_RETURN_A_CERTIFICATE \(ssl_verify_peer = true: a client "
            rb"certificate is required\)"
        )


# -- TCP and WebSocket ----------------------------------------------------------------------------
def test_tcp_server_over_tls(certs: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "tcp", "port": 0, "app": "tests.tcp_apps:Tracked"},
                       tls_settings(certs, ssl_client_cert_file=str(certs["ca"])))  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = server.port()
        ctx = client_context(certs, client_cert=True)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            assert tls.selected_alpn_protocol() is None
            tls.sendall(b"hello over tls")
            assert tls.recv(100) == b"hello over tls"
            tls.sendall(b"cert?")
            assert tls.recv(100) == b"cert: -----BEGIN CERTIFICATE-----"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not answered in plain text on a TCP port
            try:
                assert plain.recv(100) == b""
            except ConnectionResetError:
                pass


def test_websocket_over_tls(certs: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo"},
                       tls_settings(certs))  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = server.port()
        with ws_connect(f"wss://localhost:{port}/room", ssl=client_context(certs),
                        open_timeout=10) as ws:  # fmt: skip
            assert str(ws.recv(10)).startswith("welcome")
            ws.send(b"\x01" * 100000)
            assert ws.recv(10) == b"\x01" * 100000


# -- reload ------------------------------------------------------------------------------------
def served_certificate(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


@pytest.mark.timeout(120)
def test_reload_under_https_load_drops_nothing(certs: dict[str, Path], tmp_path: Path) -> None:
    """Two reloads of two TLS workers under keep-alive HTTPS load: 0 failed."""
    pidfile = tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {**tls_settings(certs), "worker_num": 2})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=ROOT) as server:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        ready_status(pidfile, 2)
        with HTTPLoad(port, connections=8, tls=client_context(certs)) as load:
            wait_until(lambda: load.ok > 100, timeout=30)
            reloads_under_load(server, load, (2, 3))
        assert load.failures == [] and load.refused == 0 and load.ok > 300


@pytest.mark.timeout(120)
def test_reload_serves_renewed_certificate(certs: dict[str, Path], tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs["server"], live / "cert.pem")
    shutil.copy(certs["server_key"], live / "key.pem")
    pidfile = tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {"worker_num": 1, "ssl_cert_file": "live/cert.pem",
                        "ssl_key_file": "live/key.pem"})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=ROOT) as server:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        generation = ready_status(pidfile, 1)["master"]["generation"]
        first = served_certificate(port)
        assert first == ssl.PEM_cert_to_DER_cert(certs["server"].read_text())
        shutil.copy(certs["renewed"], live / "cert.pem")  # as certbot renews them
        shutil.copy(certs["renewed_key"], live / "key.pem")
        server.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while ready_status(pidfile, 1)["master"]["generation"] == generation:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert served_certificate(port) == ssl.PEM_cert_to_DER_cert(certs["renewed"].read_text())
        assert get(port, "/", client_context(certs)) == (200, b"ok")


# -- the transport in a plain Twisted program ------------------------------------------------
class Pausing(Protocol):
    """Pauses its transport after each chunk and resumes a reactor turn later; echoes
    the count of bytes it got once the marker arrives."""

    def connectionMade(self) -> None:
        self.got = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        self.transport.pauseProducing()  # type: ignore[union-attr]
        reactor.callLater(0.001, self.transport.resumeProducing)  # type: ignore[attr-defined, union-attr]
        if self.got.endswith(b"END"):
            self.transport.write(b"%d" % len(self.got))  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_records_read_while_paused_are_delivered_on_resume(certs: dict[str, Path]) -> None:
    from tx_swoole.settings import make_settings
    from tx_swoole.tls import listen_tls, server_context

    factory = Factory.forProtocol(Pausing)
    port = listen_tls(0, factory, server_context(make_settings(**tls_settings(certs))),
                      interface="127.0.0.1")  # fmt: skip

    def client() -> bytes:
        ctx = client_context(certs)
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            for _ in range(200):  # many small records, so one recv holds several
                tls.sendall(b"r" * 100)
            tls.sendall(b"END")
            out = b""
            while chunk := tls.recv(100):
                out += chunk
            return out

    try:
        assert await threads.deferToThread(client) == b"20003"
    finally:
        await port.stopListening()


class Greeter(Protocol):
    """Writes before the handshake is done (at accept); ``bye`` closes at once too."""

    bye = False

    def connectionMade(self) -> None:
        self.transport.writeSequence([b"hel", b"lo"])  # type: ignore[union-attr]
        if self.bye:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class GreetAndGo(Greeter):
    bye = True


@pytest.mark.parametrize("protocol", [Greeter, GreetAndGo])
@pytest_twisted.ensureDeferred
async def test_writes_before_the_handshake_are_sent_after_it(
    certs: dict[str, Path], protocol: type[Protocol]
) -> None:
    from tx_swoole.settings import make_settings
    from tx_swoole.tls import listen_tls, server_context

    port = listen_tls(0, Factory.forProtocol(protocol),
                      server_context(make_settings(**tls_settings(certs))),
                      interface="127.0.0.1")  # fmt: skip

    def client() -> tuple[bytes, bytes]:
        ctx = client_context(certs)
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            first = tls.recv(100)
            if protocol is GreetAndGo:
                return first, tls.recv(100)  # b"": the server's close_notify
            tls.sendall(b"echo")
            second = tls.recv(100)
            tls.unwrap()  # our close_notify: the server sees a clean close
            return first, second

    try:
        answers = await threads.deferToThread(client)
        assert answers == (b"hello", b"" if protocol is GreetAndGo else b"echo")
    finally:
        await port.stopListening()
