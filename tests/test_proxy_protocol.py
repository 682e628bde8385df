"""PROXY protocol: the header parser on its own (whole, byte by byte, with data after it), then
real ``twistd swoole`` listeners behind raw sockets and behind a real ``haproxy``."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.redis_server import free_port
from tests.support import Twistd, write_config
from tx_swoole.errors import ProxyProtocolError
from tx_swoole.protocols._proxy import V2_SIGNATURE, Header, looks_like_header, parse_header

V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 80\r\n"


def v2(command: int = 1, family: int = 0x11, addresses: bytes | None = None,
       tlvs: bytes = b"") -> bytes:  # fmt: skip
    if addresses is None:
        addresses = socket.inet_aton("198.51.100.2") + socket.inet_aton("192.0.2.1")
        addresses += struct.pack("!HH", 4000, 443)
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


_SIX = [socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "2001:db8::2")]
V2_6 = v2(family=0x21, addresses=b"".join(_SIX) + struct.pack("!HH", 443, 80))
CASES = [
    (V1, Header(len(V1), ("203.0.113.7", 51234), ("192.0.2.1", 80), 1)),
    (b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n", Header(32, ("2001:db8::1", 1), ("::1", 2), 1)),
    (b"PROXY UNKNOWN\r\n", Header(15, None, None, 1)),
    (b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n", Header(31, None, None, 1)),
    (v2(), Header(28, ("198.51.100.2", 4000), ("192.0.2.1", 443), 2)),
    (V2_6, Header(52, ("2001:db8::1", 443), ("2001:db8::2", 80), 2)),
    (v2(tlvs=b"\x01\x00\x02h2"), Header(33, ("198.51.100.2", 4000), ("192.0.2.1", 443), 2)),
    (v2(command=0, family=0, addresses=b""), Header(16, None, None, 2)),  # LOCAL
    (v2(family=0x31, addresses=b"\x00" * 216), Header(232, None, None, 2)),  # unix: keep ours
]


@pytest.mark.parametrize(("data", "header"), CASES)
def test_headers_whole_bytewise_and_with_data_after(data: bytes, header: Header) -> None:
    assert parse_header(data) == header
    assert parse_header(data + b"GET / HTTP/1.1\r\n\r\n") == header
    for n in range(len(data)):
        assert parse_header(data[:n]) is None, n
    assert looks_like_header(data)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GET / HTTP/1.1\r\n", "did not start with a PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed PROXY v1"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "not an IP address"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "not IPv4"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n", "not a port number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "not a port number"),
        (b"PROXY " + b"x" * 120, "without CRLF"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12, "version 3"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12, "unknown command 2"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "too short"),
    ],
)
def test_bad_headers_named(data: bytes, words: str) -> None:
    with pytest.raises(ProxyProtocolError, match=words):
        parse_header(data)


# -- real servers --------------------------------------------------------------------------------
def serve(tmp_path: Path, settings: dict, server: dict | None = None) -> Twistd:
    server = server or {"type": "http", "app": "tests.http_apps:handler"}
    config = write_config(tmp_path, {"host": "127.0.0.1", "port": 0, **server},
                          {"worker_num": 1, **settings})  # fmt: skip
    return Twistd(config)


def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:  # fmt: skip
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def get_peer(header: bytes) -> bytes:
    return header + b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.integration
def test_http_listener_takes_the_client_from_the_header(tmp_path: Path) -> None:
    with serve(tmp_path, {"open_proxy_protocol": True, "proxy_protocol_timeout": 1.0}) as t:
        port = t.port()
        assert exchange(port, get_peer(V1)).endswith(b"\r\n\r\n203.0.113.7 51234")
        assert exchange(port, get_peer(V2_6)).endswith(b"\r\n\r\n2001:db8::1 443")
        local = exchange(port, get_peer(v2(command=0, family=0, addresses=b"")))
        assert local.split(b"\r\n\r\n", 1)[1].startswith(b"127.0.0.1 ")
        # No header: closed before the app sees anything, and the log says why.
        assert exchange(port, b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        t.wait_for(rb"closed: the connection did not start with a PROXY protocol header")
        # A header that never comes: closed at proxy_protocol_timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PROXY TCP4 1.2")
            started = time.monotonic()
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 8
        t.wait_for(rb"no PROXY header within proxy_protocol_timeout=1.0s \(14 bytes received\)")
        assert t.stop() == 0


@pytest.mark.integration
def test_header_refused_where_the_setting_is_off(tmp_path: Path) -> None:
    with serve(tmp_path, {}) as t:
        answer = exchange(t.port(), get_peer(V1))
        assert answer.startswith(b"HTTP/1.1 400 ")
        t.wait_for(rb"a PROXY protocol header, and open_proxy_protocol is off on this listener")


@pytest.mark.integration
def test_tcp_listener_reports_the_client(tmp_path: Path) -> None:
    server = {"type": "tcp", "app": "tests.listen_apps:Peer"}
    with serve(tmp_path, {"open_proxy_protocol": True}, server) as t:
        port = t.port()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(v2() + b"hello")
            got = b""
            while b"echo hello" not in got:
                got += s.recv(100)
        assert got == b"peer 198.51.100.2 4000\necho hello"


@pytest.mark.integration
def test_config_refuses_proxy_protocol_with_tls(tmp_path: Path) -> None:
    from tx_swoole.config import load_config
    from tx_swoole.errors import ConfigError

    path = write_config(tmp_path, {"type": "http", "app": "tests.http_apps:handler",
                                   "host": "127.0.0.1", "port": 0},
                        {"open_proxy_protocol": True, "ssl_cert_file": "x.pem"})  # fmt: skip
    with pytest.raises(ConfigError, match="open_proxy_protocol with ssl_cert_file"):
        load_config(str(path))


HAPROXY = """
global
    maxconn 1000
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend nodes
backend nodes
    server n1 127.0.0.1:{back} {proxy} check check-send-proxy inter 200ms
"""


@pytest.mark.integration
@pytest.mark.parametrize(("mode", "proxy"), [("tcp", "send-proxy-v2"), ("http", "send-proxy")])
def test_behind_haproxy(tmp_path: Path, mode: str, proxy: str) -> None:
    """A client on 127.0.0.5 → haproxy → tx_swoole: the app sees 127.0.0.5 and its port."""
    with serve(tmp_path, {"open_proxy_protocol": True}) as t:
        back = t.port()
        front = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY.format(mode=mode, front=front, back=back, proxy=proxy))
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.5", 0))
                        s.settimeout(10)
                        s.connect(("127.0.0.1", front))
                        source_port = s.getsockname()[1]
                        s.sendall(get_peer(b""))
                        answer = b""
                        while chunk := s.recv(65536):
                            answer += chunk
                    if b" 200 " in answer.split(b"\r\n", 1)[0]:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "haproxy did not come up"
                time.sleep(0.1)
            assert answer.split(b"\r\n\r\n", 1)[1] == f"127.0.0.5 {source_port}".encode()
            assert b"did not start with a PROXY" not in bytes(t.output)  # health checks too
        finally:
            haproxy.terminate()
            haproxy.wait(10)
