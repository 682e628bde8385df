"""``tx_swoole.clients.tcp.TCPClient`` against real ``twistd swoole`` servers on loopback."""

from __future__ import annotations

import os
import pickle
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl, task
from twisted.internet.protocol import Factory, Protocol

from tx_swoole.clients.tcp import TCPClient
from tx_swoole.errors import (
    TCPBusyError,
    TCPClosedError,
    TCPConnectError,
    TCPMessageTooLargeError,
    TCPTimeoutError,
    TCPWrongProcessError,
)
from tx_swoole.transport import listen_tcp

from .support import ROOT, Twistd, make_certificates, write_config

pytestmark = pytest.mark.integration
FRAMED = {"open_length_check": True, "package_length_type": "N", "package_length_offset": 0,
          "package_body_offset": 4}  # fmt: skip


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "condition not met in time"
        await sleep(0.02)


def serve(tmp: Path, port: int = 0, **settings: Any) -> Twistd:
    cfg = write_config(
        tmp, {"type": "tcp", "port": port, "app": "tests.tcp_apps:SilentOrBig"},
        {"worker_num": 0, **FRAMED, **settings},
    )  # fmt: skip
    return Twistd(cfg, cwd=ROOT)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Twistd, int]]:
    with serve(tmp_path) as proc:
        yield proc, proc.port()


@pytest_twisted.ensureDeferred
async def test_requests_are_answered_in_order_each_with_its_own_reply(server: Any) -> None:
    _, port = server
    client = TCPClient("127.0.0.1", port, settings=FRAMED)
    try:
        bodies = [b"request %d " % i + b"." * (i * 37 % 3000) for i in range(300)]
        replies = await defer.gatherResults(
            [defer.ensureDeferred(client.request(frame(b))) for b in bodies]
        )
        assert replies == [frame(b) for b in bodies]
        await client.send(frame(b"half"))  # the two halves
        assert await client.recv() == frame(b"half")
        sock = client.protocol.transport.getHandle()  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # default on
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        await client.close()
    with pytest.raises(TCPClosedError, match="is closed"):
        await client.send(b"x")


@pytest_twisted.ensureDeferred
async def test_recv_timeout_busy_reader_and_request_timeout(server: Any) -> None:
    _, port = server
    client = TCPClient("127.0.0.1", port, settings={**FRAMED, "open_tcp_keepalive": True},
                       read_timeout=0.3)  # fmt: skip
    try:
        await client.send(frame(b"silent 1"))
        with pytest.raises(TCPTimeoutError, match=rf"no data from 127.0.0.1:{port} within 0.3 s"):
            await client.recv()
        first = client.protocol
        sock = first.transport.getHandle()  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        # a recv timeout keeps the connection (as Swoole's); a second reader is refused
        waiting = defer.ensureDeferred(client.recv(timeout=5))
        with pytest.raises(TCPBusyError, match="already waiting.*use request"):
            await client.recv()
        await client.send(frame(b"one"))
        assert await waiting == frame(b"one")
        assert client.protocol is first
        # a request past its timeout closes the connection: its late reply reaches no one
        with pytest.raises(TCPTimeoutError, match="within 0.3 s; connection closed"):
            await client.request(frame(b"silent 2"))
        assert client.protocol is None
        assert "request timed out" in str(client.closedReason)
        assert await client.request(frame(b"after")) == frame(b"after")  # reconnected
        assert client.protocol is not first
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_over_package_max_length_closes_and_says_so(server: Any) -> None:
    _, port = server
    client = TCPClient("127.0.0.1", port, settings={**FRAMED, "package_max_length": 65536})
    try:
        too_big = r"over package_max_length=65536 \(100004 bytes\); raise"
        with pytest.raises(TCPMessageTooLargeError, match=too_big):
            await client.request(frame(b"big"))
        assert await client.request(frame(b"ok")) == frame(b"ok")
    finally:
        await client.close()
    with pytest.raises(ValueError, match="a client takes only"):
        TCPClient(settings={"worker_num": 2})
    with pytest.raises(Exception, match="package_length_type"):
        TCPClient(settings={"package_length_type": "X"})


@pytest_twisted.ensureDeferred
async def test_refused_then_reconnects_with_back_off_and_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    client = TCPClient("127.0.0.1", port, settings=FRAMED, read_timeout=10)
    once = TCPClient("127.0.0.1", port, settings=FRAMED, reconnect=False)
    try:
        with pytest.raises(TCPConnectError, match=rf"nothing listens on 127.0.0.1:{port}"):
            await client.request(frame(b"x"))
        with pytest.raises(TCPConnectError, match="reconnecting in the background"):
            await client.send(frame(b"x"))  # backing off: at once, not a hang
        with pytest.raises(TCPConnectError, match=rf"nothing listens on 127.0.0.1:{port}"):
            await once.send(frame(b"x"))
        proc = serve(tmp_path, port)
        try:
            proc.port()
            await until(lambda: client.protocol is not None)  # the back-off found it
            assert await client.request(frame(b"up")) == frame(b"up")
            assert await once.request(frame(b"up")) == frame(b"up")
            pending = defer.ensureDeferred(client.request(frame(b"silent")))
            await sleep(0.05)
            proc.stop()
        finally:
            proc.stop()
        with pytest.raises(TCPClosedError, match=rf"127.0.0.1:{port}"):
            await pending
        with pytest.raises(TCPClosedError):
            await once.request(frame(b"gone"))
        proc = serve(tmp_path, port)
        try:
            proc.port()
            await until(lambda: client.protocol is not None)
            assert await client.request(frame(b"back")) == frame(b"back")
            assert await once.request(frame(b"back")) == frame(b"back")  # connects on demand
        finally:
            proc.stop()
    finally:
        await client.close()
        await once.close()


@pytest_twisted.ensureDeferred
async def test_callback_style_eof_framing_and_a_unix_socket(tmp_path: Path) -> None:
    sock_path = tmp_path / "echo.sock"
    cfg = write_config(
        tmp_path, {"type": "tcp", "path": str(sock_path), "app": "tests.tcp_apps:Tracked"},
        {"worker_num": 0, "open_eof_split": True},  # package_eof: "\r\n"
    )  # fmt: skip
    got: list[bytes] = []

    class Lines(TCPClient):
        async def messageReceived(self, message: bytes) -> None:  # noqa: N802
            await sleep(0)
            got.append(message)

    with Twistd(cfg, cwd=ROOT) as proc:
        proc.wait_for(rb"serving tcp app")
        client = Lines(unix_socket=str(sock_path), settings={"open_eof_split": True})
        try:
            await client.send(b"one\r\ntw")
            await client.send(b"o\r\nthree\r\n")
            await until(lambda: len(got) == 3)
            assert got == [b"one\r\n", b"two\r\n", b"three\r\n"]
            with pytest.raises(TCPBusyError, match="messageReceived"):
                await client.recv()
        finally:
            await client.close()
        assert client.address == f"unix:{sock_path}"
        missing = TCPClient(unix_socket=str(tmp_path / "none.sock"), reconnect=False)
        with pytest.raises(TCPConnectError, match="nothing listens on unix:"):
            await missing.send(b"x")


@pytest_twisted.ensureDeferred
async def test_heartbeat_keeps_the_connection_past_the_servers_idle_time(tmp_path: Path) -> None:
    with serve(tmp_path, heartbeat_check_interval=0.2, heartbeat_idle_time=1) as proc:
        port = proc.port()
        client = TCPClient("127.0.0.1", port, settings=FRAMED, heartbeat_idle_time=0.3,
                           heartbeat_ping=frame(b"ping"))  # fmt: skip
        plain = TCPClient("127.0.0.1", port, settings=FRAMED)
        try:
            assert await client.request(frame(b"a")) == frame(b"a")
            first = client.protocol
            assert await plain.request(frame(b"a")) == frame(b"a")
            await until(lambda: plain.protocol is None)  # the server's heartbeat drops it
            assert "reset by the peer" in str(plain.closedReason)  # the server aborts
            proc.wait_for(rb"app swallowed a ping", count=3)
            assert client.protocol is first  # kept alive by its pings
            assert await client.request(frame(b"b")) == frame(b"b")
        finally:
            await client.close()
            await plain.close()


@pytest_twisted.ensureDeferred
async def test_an_unanswered_heartbeat_closes_the_connection() -> None:
    class Mute(Protocol):
        def dataReceived(self, data: bytes) -> None:
            pass

    port = listen_tcp(0, Factory.forProtocol(Mute), interface="127.0.0.1")
    client = TCPClient("127.0.0.1", port.getHost().port, heartbeat_idle_time=0.1,
                       heartbeat_ping=b"ping", heartbeat_pong=b"pong", read_timeout=0.3,
                       reconnect=False)  # fmt: skip
    try:
        await client.send(b"hello")
        await until(lambda: client.protocol is None)
        assert "no answer to the heartbeat" in str(client.closedReason)
    finally:
        await client.close()
        await port.stopListening()


def test_a_client_belongs_to_its_process() -> None:
    client = TCPClient("127.0.0.1", 1)
    with pytest.raises(TCPWrongProcessError, match="worker_start"):
        pickle.dumps(client)
    pid = os.fork()
    if pid == 0:  # the child: the client must refuse
        try:
            client._check()
        except TCPWrongProcessError as e:
            os._exit(0 if "created in process" in str(e) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest_twisted.ensureDeferred
async def test_unread_messages_pause_reading_and_tls(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    tls_settings = {"ssl_cert_file": str(certs["server"]), "ssl_key_file": str(certs["server_key"])}
    with serve(tmp_path, **tls_settings) as proc:
        port = proc.port()
        ca = ssl.Certificate.loadPEM(certs["ca"].read_bytes())
        client = TCPClient("127.0.0.1", port, settings=FRAMED, max_queued=10,
                           tls=ssl.optionsForClientTLS("localhost", trustRoot=ca))  # fmt: skip
        try:
            assert await client.request(frame(b"over tls")) == frame(b"over tls")
            for i in range(50):  # echoed, and nobody reads them yet
                await client.send(frame(b"m%d" % i))
            await until(lambda: client._paused)  # reading paused at max_queued
            assert len(client._inbox) <= 50
            got = [await client.recv() for _ in range(50)]
            assert got == [frame(b"m%d" % i) for i in range(50)]  # in order, none lost
            assert not client._paused
        finally:
            await client.close()
