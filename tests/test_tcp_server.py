"""``twistd swoole`` serving long-lived TCP apps, driven by real sockets."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, Protocol

from tx_swoole.protocols.tcp import ConnectionTable, TCPProtocol
from tx_swoole.transport import listen_tcp

from .support import EXAMPLES, Twistd, write_config

pytestmark = pytest.mark.integration


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_frame(sock: socket.socket) -> str:
    (n,) = struct.unpack(">I", recv_exactly(sock, 4))
    return recv_exactly(sock, n).decode()


def send_frame(sock: socket.socket, text: str) -> None:
    body = text.encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_echo_example_and_heartbeat(tmp_path: Path) -> None:
    """The echo example echoes; a silent client is dropped by the heartbeat, a chatty one is not."""
    cfg = write_config(
        tmp_path,
        {"type": "tcp", "port": 0, "app": "tcp_echo:Echo"},
        {"worker_num": 0, "heartbeat_check_interval": 0.2, "heartbeat_idle_time": 0.6},
    )
    with Twistd(cfg, cwd=EXAMPLES) as server:
        port = server.port()
        chatty = socket.create_connection(("127.0.0.1", port))
        silent = socket.create_connection(("127.0.0.1", port))
        chatty.sendall(b"hello")
        assert recv_exactly(chatty, 5) == b"hello"
        for _ in range(8):
            chatty.sendall(b"k")
            assert recv_exactly(chatty, 1) == b"k"
            time.sleep(0.15)
        assert closed_by_server(silent, 1.0)
        chatty.sendall(b"still")
        assert recv_exactly(chatty, 5) == b"still"
        server.wait_for(rb"idle \d\.\ds > heartbeat_idle_time=0.6: closed")
        assert server.stop() == 0


def test_echo_half_closed_client_gets_everything_back(tmp_path: Path) -> None:
    """A client that sends 8 MiB and half-closes reads all 8 MiB back, then the server
    closes: nothing still queued is dropped at the peer's FIN."""
    import threading

    cfg = write_config(tmp_path, {"type": "tcp", "port": 0, "app": "tcp_echo:Echo"},
                       {"worker_num": 0})  # fmt: skip
    with Twistd(cfg, cwd=EXAMPLES) as server:
        sock = socket.create_connection(("127.0.0.1", server.port()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        payload = bytes(range(256)) * (8 * 4096)

        def send_all() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_all)
        sender.start()
        sock.settimeout(30)
        got = bytearray()
        while chunk := sock.recv(1 << 16):
            got += chunk
        sender.join(10)
        sock.close()
        assert len(got) == len(payload) and bytes(got) == payload


def test_chat_example_frames_broadcast_and_limit(tmp_path: Path) -> None:
    """The framed chat example relays whole messages; an oversized frame closes the sender."""
    cfg = write_config(
        tmp_path,
        {"type": "tcp", "port": 0, "app": "tcp_chat:Chat"},
        {"worker_num": 0, "open_length_check": True, "package_max_length": 1024},
    )
    with Twistd(cfg, cwd=EXAMPLES) as server:
        port = server.port()
        a = socket.create_connection(("127.0.0.1", port))
        assert read_frame(a).startswith("welcome #")
        b = socket.create_connection(("127.0.0.1", port))
        assert read_frame(b).startswith("welcome #")
        assert read_frame(a).endswith("joined")
        body = "x" * 500
        raw = struct.pack(">I", len(body)) + body.encode()
        a.sendall(raw[:3])
        time.sleep(0.05)
        a.sendall(raw[3:])  # split frame arrives whole
        assert read_frame(b).endswith(": " + body)
        send_frame(b, "/who")
        assert len(read_frame(b).split()) == 2
        b.sendall(struct.pack(">I", 5000))
        assert closed_by_server(b, 2.0)
        assert read_frame(a).endswith("left (limit)")
        server.wait_for(rb"declared message of 5004 bytes exceeds package_max_length=1024")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"worker_nun": 1}, b"did you mean worker_num?"),
        ({"heartbeat_idle_time": -1}, b"heartbeat_idle_time = -1: allowed range"),
    ],
)
def test_config_error_exits_nonzero_before_binding(
    tmp_path: Path, settings: dict, message: bytes
) -> None:
    """A bad config makes twistd exit non-zero with the reason, and nothing is bound."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg = write_config(tmp_path, {"type": "tcp", "port": port, "app": "tcp_echo:Echo"}, settings)
    server = Twistd(cfg, cwd=EXAMPLES)
    assert server.proc.wait(30) != 0
    server.stop()
    assert message in server.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free


def test_app_import_error_exits_with_boot_error(tmp_path: Path) -> None:
    """An app that cannot be imported is reported clearly and twistd exits with code 3."""
    cfg = write_config(
        tmp_path, {"type": "tcp", "port": 0, "app": "no_such_app_mod:Thing"}, {"worker_num": 0}
    )
    server = Twistd(cfg, cwd=EXAMPLES)
    assert server.proc.wait(30) == 3
    server.stop()
    assert b"cannot import 'no_such_app_mod'" in server.output


class OptionReader(TCPProtocol):
    """Reads its socket options back with getsockopt when it connects."""

    seen: dict[str, int] = {}

    def connectionOpened(self) -> None:
        sock = self.transport.getHandle()
        OptionReader.seen = {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, 18),
        }
        self.send(b"ok")


@pytest_twisted.ensureDeferred
async def test_keepalive_options_read_back_on_server_socket() -> None:
    """The tcp_keep* settings are really set on the accepted socket (getsockopt)."""
    factory = ConnectionTable(
        OptionReader,
        {"open_tcp_keepalive": True, "tcp_keepidle": 11, "tcp_keepinterval": 7,
         "tcp_keepcount": 3, "tcp_user_timeout": 4000},
    )  # fmt: skip
    port = listen_tcp(0, factory, interface="127.0.0.1")
    got: defer.Deferred[bytes] = defer.Deferred()

    class Client(Protocol):
        def dataReceived(self, data: bytes) -> None:
            got.callback(data)
            self.transport.loseConnection()

    reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Client))  # type: ignore[attr-defined]
    assert await got == b"ok"
    assert OptionReader.seen == {
        "keepalive": 1,
        "idle": 11,
        "interval": 7,
        "count": 3,
        "user_timeout": 4000,
    }
    await port.stopListening()


def _plugin_listed(tmp_path: Path, editable: bool) -> str:
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pth = (
        venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    # Reach twisted & co. from this interpreter's site-packages without its .pth files, so the
    # checkout being tested (installed -e here) is invisible unless the new install works.
    (pth / "_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files"], cwd=EXAMPLES.parent, capture_output=True, text=True, check=True
    )
    for name in files.stdout.split():
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((EXAMPLES.parent / name).read_bytes())
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run(
        [*cmd, *(["-e", str(src)] if editable else [str(src)])], check=True, cwd=tmp_path
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "twisted", "--help"],
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    sub = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "twisted", "swoole", "--help"],
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return out + sub


@pytest.mark.timeout(180)
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_twistd_lists_swoole_after_install(tmp_path: Path, editable: bool) -> None:
    """`twistd --help` lists swoole after `pip install .` and after `pip install -e .`."""
    out = _plugin_listed(tmp_path, editable)
    assert "swoole " in out and "--config=" in out


def lifecycle_server(tmp_path: Path) -> Twistd:
    cfg = write_config(
        tmp_path, {"type": "tcp", "port": 0, "app": "tests.tcp_apps:Tracked"},
        {"worker_num": 0, "max_wait_time": 1},
        {"worker_exit": "tests.tcp_apps:on_worker_exit",
         "worker_stop": "tests.tcp_apps:on_worker_stop"},
    )  # fmt: skip
    return Twistd(cfg, cwd=Path(__file__).resolve().parent.parent)


def test_every_connection_aborted_at_the_deadline_is_reported_closed(tmp_path: Path) -> None:
    """Three connections still open at max_wait_time on shutdown: each gets exactly one
    connectionClosed (reason server), all before worker_stop."""
    with lifecycle_server(tmp_path) as server:
        port = server.port()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for s in socks:
            s.sendall(b"hi")
            assert recv_exactly(s, 2) == b"hi"
        assert server.stop() == 0
        out = bytes(server.output)
        closes = re.findall(rb"app saw close of (\d+): (\w+)", out)
        assert sorted(closes) == [(b"1", b"server"), (b"2", b"server"), (b"3", b"server")]
        assert out.rindex(b"app saw close of") < out.index(b"app worker_stop called")
        for s in socks:
            s.close()


def test_worker_exit_called_even_with_no_connection(tmp_path: Path) -> None:
    """A worker that holds no connection still calls worker_exit (at least once), then
    worker_stop."""
    with lifecycle_server(tmp_path) as server:
        server.port()
        assert server.stop() == 0
        out = bytes(server.output)
        assert out.index(b"app worker_exit called") < out.index(b"app worker_stop called")
