"""Several listeners in one server (``[[listen]]``): a real master serving HTTP on a port and
on a Unix socket, a TCP line protocol and UDP at once, reloaded under load on all of them
(0 failed, no datagram lost), per-listener settings, connection ids and the by-id API
across listeners and workers; UDP on its own (datagrams spread over the workers, the size
limit, a handler still running through a reload); and the in-process server."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from tx_swoole.config import load_config, parse_config
from tx_swoole.protocols.tcp import ConnectionTable, TCPProtocol

from .support import ROOT, HTTPLoad, SocketStringTransport, Twistd
from .test_multiprocess import ready_status, reloads_under_load, status, wait_until

MANY = """\
[server]
type = "http"
port = 0
app = "tests.http_apps:handler"

[settings]
worker_num = 2
max_wait_time = 5

[[listen]]
type = "tcp"
port = 0
app = "tests.listen_apps:Chat"

[listen.settings]
open_eof_split = true
package_eof = "\\n"

[[listen]]
type = "http"
path = "app.sock"
app = "tests.http_apps:handler"

[listen.settings]
package_max_length = 1024

[[listen]]
type = "udp"
port = 0
app = "tests.listen_apps:UDPEcho"
"""


def write(tmp: Path, text: str) -> Path:
    path = tmp / "server.toml"
    path.write_text(text)
    return path


def port_of(server: Twistd, kind: str, app: str) -> int:
    pattern = rb"serving %s app %s on (?:udp://)?127\.0\.0\.1:(\d+)" % (
        kind.encode(), re.escape(app.encode()),
    )  # fmt: skip
    return int(server.wait_for(pattern)[0].group(1))


class LineReader:
    """A TCP client of the line protocol."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.id = int(self.line().split()[1])

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF after {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def ask(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\n")
        return self.line()


class Loads:
    """Threads that each run ``one()`` in a loop, counting answers and failures."""

    def __init__(self, one: Any, threads: int) -> None:
        self.one = one
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        state: dict[str, Any] = {}
        while not self._stop.is_set():
            try:
                self.one(state)
            except Exception as e:  # a failure a user would see
                with self._lock:
                    self.failures.append(f"{e.__class__.__name__}: {e}")
                state.clear()
                time.sleep(0.05)
                continue
            with self._lock:
                self.ok += 1
        if "sock" in state:
            state["sock"].close()

    def __enter__(self) -> Loads:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def tcp_round_trip(port: int) -> Any:
    def one(state: dict[str, Any]) -> None:
        client = LineReader(port)
        try:
            assert client.ask(b"ping") == b"echo ping"
        finally:
            client.sock.close()

    return one


def udp_round_trip(port: int) -> Any:
    """One datagram from the thread's own socket, answered within 5 s (else lost)."""

    def one(state: dict[str, Any]) -> None:
        sock = state.get("sock")
        if sock is None:
            sock = state["sock"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            state["n"] = 0
        state["n"] += 1
        data = b"n%d" % state["n"]
        sock.sendto(data, ("127.0.0.1", port))
        try:
            answer = sock.recv(2048)
        except TimeoutError:
            raise AssertionError(f"datagram {data!r} lost") from None
        assert answer.split(b":", 1)[1] == data, answer
        time.sleep(0.002)  # a bounded rate

    return one


def curl(args: list[str]) -> bytes:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30).stdout


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_four_listeners_reload_under_load_and_shut_down(tmp_path: Path) -> None:
    sock_path = tmp_path / "app.sock"
    pidfile = tmp_path / "master.pid"
    with Twistd(write(tmp_path, MANY), f"--pidfile={pidfile}", cwd=ROOT) as server:
        server.wait_for(rb"listening on 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+, unix:.*app\.sock, "
                        rb"udp://127\.0\.0\.1:\d+; starting 2 workers")  # fmt: skip
        ready_status(pidfile, 2)
        http_port = server.port()
        tcp_port = port_of(server, "tcp", "tests.listen_apps:Chat")
        udp_port = port_of(server, "udp", "tests.listen_apps:UDPEcho")
        # per-listener settings: the Unix listener's package_max_length is 1024
        body = ["-X", "POST", "--data-binary", "x" * 2000, "-o", "/dev/null", "-w", "%{http_code}"]
        assert curl([*body, f"http://127.0.0.1:{http_port}/upload"]) == b"200"
        assert curl([*body, "--unix-socket", str(sock_path), "http://x/upload"]) == b"413"
        # the by-id API reaches every worker's connections of the TCP listener
        clients = [LineReader(tcp_port) for _ in range(16)]
        ids = {c.id for c in clients}
        assert len(ids) == 16 and {i % 2 for i in ids} == {0, 1}  # both workers hold some

        def listed() -> set[int]:
            return {int(x) for x in clients[0].ask(b"ids").split()}

        wait_until(lambda: ids <= listed())
        assert clients[0].ask(b"say hi") == b"said"
        assert all(c.line() == b"hi" for c in clients[1:])
        for c in clients:
            c.sock.close()
        with (
            HTTPLoad(http_port, connections=4) as http,
            HTTPLoad(0, connections=4, keep_alive=False, unix=str(sock_path)) as unix,
            Loads(tcp_round_trip(tcp_port), 4) as tcp,
            Loads(udp_round_trip(udp_port), 4) as udp,
        ):
            wait_until(lambda: min(http.ok, unix.ok, tcp.ok, udp.ok) > 50, timeout=30)
            reloads_under_load(server, http, (2, 3), more=100)
            before = (unix.ok, tcp.ok, udp.ok)
            wait_until(lambda: (unix.ok, tcp.ok, udp.ok) > before, timeout=30)
            wait_until(lambda: min(unix.ok - before[0], tcp.ok - before[1],
                                   udp.ok - before[2]) > 50, timeout=30)  # fmt: skip
        for load in (http, unix, tcp, udp):
            assert load.failures == [], load.failures[:5]
        assert http.refused == unix.refused == 0

        def served() -> list[int]:
            return [w["requests"] for w in status(pidfile)["workers"] if w["generation"] == 3]

        wait_until(lambda: len(served()) == 2 and min(served()) > 0)  # both, every listener
        server.signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    assert not sock_path.exists()


UDP_ONLY = """\
[server]
type = "udp"
port = 0
app = "tests.listen_apps:UDPEcho"

[settings]
worker_num = 2
package_max_length = 512
"""


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_udp_spread_limit_and_a_handler_running_through_a_reload(tmp_path: Path) -> None:
    pidfile = tmp_path / "master.pid"
    with Twistd(write(tmp_path, UDP_ONLY), f"--pidfile={pidfile}", cwd=ROOT) as server:
        ready_status(pidfile, 2)
        port = port_of(server, "udp", "tests.listen_apps:UDPEcho")
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
        answered: dict[bytes, int] = {}
        for s in socks:
            s.settimeout(5)
        for rnd in range(10):  # 320 datagrams from 32 source ports, 32 at a time
            for i, s in enumerate(socks):
                s.sendto(b"%d-%d" % (rnd, i), ("127.0.0.1", port))
            for s in socks:
                worker, data = s.recv(2048).split(b":", 1)
                answered[data] = int(worker)
        assert len(answered) == 320
        per_worker = [list(answered.values()).count(w) for w in (0, 1)]
        assert min(per_worker) > 0, per_worker  # the kernel spreads them by source address
        probe = socks[0]
        probe.sendto(b"x" * 600, ("127.0.0.1", port))
        server.wait_for(rb"dropped: over package_max_length=512 bytes .*raise "
                        rb"package_max_length")  # fmt: skip
        probe.sendto(b"x" * 512, ("127.0.0.1", port))
        assert probe.recv(2048).endswith(b":" + b"x" * 512)  # the limit itself passes
        probe.sendto(b"fail", ("127.0.0.1", port))
        server.wait_for(rb"datagramReceived from .* failed")
        probe.sendto(b"after", ("127.0.0.1", port))
        assert probe.recv(2048).endswith(b":after")  # the worker lives on
        # a handler still running when its worker drains finishes and answers
        slow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        slow.settimeout(10)
        slow.sendto(b"slow1", ("127.0.0.1", port))
        server.wait_for(rb"slow datagram started")
        server.signal(signal.SIGUSR1)
        assert slow.recv(2048).endswith(b":slow1")
        server.wait_for(rb"reload to generation 2 finished", timeout=30)
        for s in socks:
            s.sendto(b"again", ("127.0.0.1", port))
            assert s.recv(2048).endswith(b":again")
        assert server.stop() == 0


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_in_process_server_with_three_listeners(tmp_path: Path) -> None:
    text = MANY.replace("worker_num = 2", "worker_num = 0")
    sock_path = tmp_path / "app.sock"
    with Twistd(write(tmp_path, text), cwd=ROOT) as server:
        http_port = server.port()
        tcp_port = port_of(server, "tcp", "tests.listen_apps:Chat")
        udp_port = port_of(server, "udp", "tests.listen_apps:UDPEcho")
        assert curl([f"http://127.0.0.1:{http_port}/"]) == b"ok"
        assert curl(["--unix-socket", str(sock_path), "http://x/"]) == b"ok"
        a, b = LineReader(tcp_port), LineReader(tcp_port)
        assert {int(x) for x in a.ask(b"ids").split()} >= {a.id, b.id}
        assert a.ask(b"say yo") == b"said" and b.line() == b"yo"
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(b"hello", ("127.0.0.1", udp_port))
        assert u.recv(100) == b"0:hello"
        a.sock.close()
        b.sock.close()
        assert server.stop() == 0
    assert not sock_path.exists()


# -- config and ids, without processes ------------------------------------------------------------
def test_listen_tables_inherit_settings_and_round_trip(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, MANY)))
    main, tcp, unix, udp = config.listeners
    assert (main.type, tcp.type, unix.type, udp.type) == ("http", "tcp", "http", "udp")
    assert tcp.label == "[[listen]] #1" and main.label == "[server]"
    assert tcp.settings.open_eof_split and not main.settings.open_eof_split
    assert unix.settings.package_max_length == 1024
    assert main.settings.package_max_length == 2 * 1024 * 1024
    assert unix.settings.max_wait_time == 5  # inherited from [settings]
    assert unix.unix_path == str(tmp_path / "app.sock") and unix.address.startswith("unix:")
    assert udp.address == "udp://127.0.0.1:0"
    # what a worker gets back from the master is the same config
    raw = config.to_dict()
    again = parse_config({k: raw[k] for k in ("server", "settings", "events", "listen")},
                         raw["base_dir"], raw["path"])  # fmt: skip
    assert again.listeners == config.listeners


def test_connection_ids_are_unique_across_listeners_and_workers() -> None:
    """Two workers of two listeners: every id distinct, and ``id % worker_num`` is the
    worker; the by-id API of one table finds the other listener's connections."""
    seen: set[int] = set()
    clock = task.Clock()
    for worker in (0, 1):
        tables = [ConnectionTable(TCPProtocol, {}, reactor=clock) for _ in range(2)]
        for listener, table in enumerate(tables):
            table.numberIds(worker, 2, 1, listener, 2)
        tables[0].siblings, tables[1].siblings = [tables[1]], [tables[0]]
        for table in tables:
            for _ in range(50):
                p = table.buildProtocol(None)  # type: ignore[arg-type]
                assert p is not None
                p.makeConnection(SocketStringTransport())
                assert p.connId % 2 == worker and p.connId not in seen
                seen.add(p.connId)
        other = next(iter(tables[1].connections))
        assert tables[0].exists(other) and tables[0].send(other, b"x")
        assert other in tables[0].listConnections()
        assert tables[1].connections[other].transport.value() == b"x"  # type: ignore[attr-defined]
    assert len(seen) == 200


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_metrics_example(tmp_path: Path) -> None:
    """examples/metrics.toml on free ports: UDP counters shown over HTTP and over the Unix
    socket, the beats of its process counted, the socket file gone at shutdown."""
    text = (ROOT / "examples" / "metrics.toml").read_text()
    text = text.replace("port = 9501", "port = 0").replace("port = 8125", "port = 0")
    (tmp_path / "metrics.py").write_text((ROOT / "examples" / "metrics.py").read_text())
    with Twistd(write(tmp_path, text)) as server:
        http_port = server.port()
        udp_port = port_of(server, "udp", "metrics:StatsD")
        server.wait_for(rb"process beat #0 \(pid \d+\) running metrics:beat")
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"hits:2|c\nmiss:1|c", ("127.0.0.1", udp_port))
        u.sendto(b"hits:3|c\nbad line", ("127.0.0.1", udp_port))
        u.sendto(b"x" * 1500, ("127.0.0.1", udp_port))  # over package_max_length: dropped
        wait_until(lambda: b"hits 5\nmiss 1\n" in curl([f"http://127.0.0.1:{http_port}/"]))
        admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        admin.settimeout(10)
        admin.connect(str(tmp_path / "metrics.sock"))
        admin.sendall(b"get hits\n")
        assert admin.recv(100) == b"5\n"
        wait_until(lambda: b"beats " in curl([f"http://127.0.0.1:{http_port}/"]))
        server.wait_for(rb"dropped: over package_max_length=1432 bytes")
        admin.close()
        assert server.stop() == 0
    assert not (tmp_path / "metrics.sock").exists()
