"""Real ``twistd swoole`` masters with worker processes, driven by signals and real clients."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .support import EXAMPLES, HTTPLoad, Twistd, pid_alive, write_config

pytestmark = pytest.mark.integration


def start(
    tmp: Path,
    settings: dict[str, Any],
    app: str = "http_hello:handler",
    kind: str = "http",
    events: dict[str, str] | None = None,
) -> tuple[Twistd, int, Path]:
    pidfile = tmp / "master.pid"
    cfg = write_config(
        tmp, {"type": kind, "port": 0, "app": app}, {"max_wait_time": 3, **settings}, events
    )
    server = Twistd(cfg, f"--pidfile={pidfile}", cwd=EXAMPLES)
    port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
    server.wait_for(rb"ready", count=settings.get("worker_num", 1))
    return server, port, pidfile


def status(pidfile: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tx_swoole", "status", "--pidfile", str(pidfile), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def worker_pids(pidfile: Path) -> set[int]:
    return {w["pid"] for w in status(pidfile)["workers"]}


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def reloads_under_load(server: Any, load: Any, generations: tuple[int, ...], more: int = 100,
                       progress_timeout: float = 30.0) -> None:  # fmt: skip
    """A SIGUSR1 reload to each of ``generations``, each once the one before has finished
    and the load has had ``more`` answers since it began."""
    for generation in generations:
        before = load.ok
        server.signal(signal.SIGUSR1)
        server.wait_for(rb"reload to generation %d finished" % generation, timeout=30)
        wait_until(lambda: load.ok > before + more, timeout=progress_timeout)  # noqa: B023


def ready_status(pidfile: Path, workers: int, timeout: float = 15.0) -> dict[str, Any]:
    """The status once the master reports ``workers`` workers of its current generation."""
    found: dict[str, Any] = {}

    def complete() -> bool:
        if not Path(str(pidfile) + ".status.json").exists():
            return False
        found.update(status(pidfile))
        gen = found["master"]["generation"]
        current = [w for w in found["workers"] if w["generation"] == gen]
        return len(current) == workers and not found["master"]["reloading"]

    wait_until(complete, timeout)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "close"])
def test_reload_three_times_under_load_drops_nothing(tmp_path: Path, keep_alive: bool) -> None:
    """Three SIGUSR1 reloads 1.5 s apart under load: 0 failed, all workers replaced, no old
    worker alive after max_wait_time."""
    server, port, pidfile = start(tmp_path, {"worker_num": 2})
    with server:
        first = {w["pid"] for w in ready_status(pidfile, 2)["workers"]}
        with HTTPLoad(port, connections=12, keep_alive=keep_alive) as load:
            wait_until(lambda: load.ok > 100, timeout=20)
            reloads_under_load(server, load, (2, 3, 4), progress_timeout=20)
        assert load.failures == [] and load.refused == 0 and load.ok > 500
        server.wait_for(rb"reload to generation 4 finished")
        wait_until(  # the old generation drains, then leaves the status
            lambda: [w["generation"] for w in status(pidfile)["workers"]] == [4, 4], timeout=15
        )
        now = status(pidfile)
        assert not first & {w["pid"] for w in now["workers"]}
        wait_until(lambda: not any(pid_alive(p) for p in first), timeout=10)
        assert server.stop() == 0


@pytest.mark.timeout(60)
def test_max_request_recycles_workers_without_failures(tmp_path: Path) -> None:
    """worker_num = 1, max_request = 500: thousands of keep-alive requests → several worker
    generations, 0 failed."""
    server, port, pidfile = start(tmp_path, {"worker_num": 1, "max_request": 500})
    with server, HTTPLoad(port, connections=8) as load:
        server.wait_for(rb"max_request reached", count=3, timeout=45)
        load.stop()
        assert load.failures == [] and load.refused == 0 and load.ok >= 1500
        pids = {int(m.group(1)) for m in server.wait_for(rb"worker 0 \(pid (\d+)\) serving")}
        assert len(pids) >= 3


@pytest.mark.timeout(60)
def test_crashed_worker_respawned_with_its_id_and_logs_tagged(tmp_path: Path) -> None:
    """kill -9 a worker: a new one with the same id serves within a second; worker log lines
    reach the master's log tagged with worker id and pid."""
    server, port, pidfile = start(tmp_path, {"worker_num": 2})
    with server:
        server.wait_for(rb"tx_swoole.worker#info worker 0 pid \d+\] worker 0 \(pid \d+\) serving")
        before = {w["id"]: w["pid"] for w in ready_status(pidfile, 2)["workers"]}
        os.kill(before[1], signal.SIGKILL)
        started = time.monotonic()
        server.wait_for(rb"worker 1 \(pid %d, generation 1\) died unexpectedly" % before[1])
        server.wait_for(rb"worker 1 \(pid \d+, generation 1\) ready", count=2)
        assert time.monotonic() - started < 1.5
        wait_until(lambda: {w["id"] for w in status(pidfile)["workers"]} == {0, 1}
                   and before[1] not in worker_pids(pidfile))  # fmt: skip
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")


@pytest.mark.timeout(60)
def test_app_that_cannot_boot_stops_master_with_traceback(tmp_path: Path) -> None:
    """An app import error in the workers is reported with its traceback; the master exits 3
    instead of respawning in a loop."""
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "no_such_mod:handler"},
                       {"worker_num": 2})  # fmt: skip
    server = Twistd(cfg, cwd=EXAMPLES)
    assert server.proc.wait(30) == 3
    server.stop()
    assert b"cannot import 'no_such_mod'" in server.output and b"Traceback" in server.output
    assert server.output.count(b"tx_swoole.process.worker") <= 4  # two boots, no loop


@pytest.mark.timeout(60)
def test_shutdown_under_load_no_reset_exit_0_pidfile_removed(tmp_path: Path) -> None:
    """SIGTERM under keep-alive load: every request gets an answer (clients learn of the
    shutdown only by Connection: close or a refused connect); exit 0 within 2 x max_wait_time;
    pid file removed; no worker left behind."""
    server, port, pidfile = start(tmp_path, {"worker_num": 2})
    workers = {w["pid"] for w in ready_status(pidfile, 2)["workers"]}
    with HTTPLoad(port, connections=16) as load:
        wait_until(lambda: load.ok > 100, timeout=20)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.proc.wait(10)
        took = time.monotonic() - started
        wait_until(lambda: load.refused > 0, timeout=10)
    server.stop()
    assert code == 0 and took <= 6
    assert load.failures == [] and load.ok > 100 and load.refused > 0
    assert not pidfile.exists() and not Path(str(pidfile) + ".status.json").exists()
    assert not any(pid_alive(p) for p in workers)


@pytest.mark.timeout(60)
def test_workers_exit_when_master_dies(tmp_path: Path) -> None:
    """No orphan survives its master: workers notice and exit on their own."""
    server, _, pidfile = start(tmp_path, {"worker_num": 2})
    workers = {w["pid"] for w in ready_status(pidfile, 2)["workers"]}
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=8)


@pytest.mark.timeout(60)
def test_cli_status_reload_stop(tmp_path: Path) -> None:
    """python -m tx_swoole status/reload/stop work against a running master."""
    server, _, pidfile = start(tmp_path, {"worker_num": 2})
    with server:
        ready_status(pidfile, 2)
        cli = [sys.executable, "-m", "tx_swoole"]
        where = ["--pidfile", str(pidfile)]
        text = subprocess.run([*cli, "status", *where], capture_output=True, text=True).stdout
        assert f"master pid {server.proc.pid}" in text and "requests" in text
        out = subprocess.run([*cli, "reload", *where], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "reloaded: generation 2" in out.stdout
        out = subprocess.run([*cli, "stop", *where], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "exited" in out.stdout
        assert server.proc.wait(5) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [2, 4])
def test_new_connections_spread_across_workers(tmp_path: Path, workers: int) -> None:
    """A burst of keep-alive connections and a stream of short ones both spread over the
    workers: none takes under 30% (2 workers) or 15% (4 workers)."""
    server, port, pidfile = start(tmp_path, {"worker_num": workers})
    floor = 0.30 if workers == 2 else 0.15
    with server:
        burst = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        for s in burst:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        for s in burst:
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
        wait_until(  # stats reach the master every second
            lambda: sum(w["connections"] for w in status(pidfile)["workers"]) == 300
        )
        held = [w["connections"] for w in status(pidfile)["workers"]]
        for s in burst:
            s.close()
        with HTTPLoad(port, connections=8, keep_alive=False) as load:
            wait_until(lambda: load.ok >= 1500, timeout=30)
        total = 300 + load.ok
        wait_until(lambda: sum(w["requests"] for w in status(pidfile)["workers"]) >= total)
        served = [w["requests"] for w in status(pidfile)["workers"]]
        print("spread", held, served)
        assert load.failures == [] and sum(held) == 300
        assert min(held) / 300 >= floor, held
        assert min(served) / sum(served) >= floor, served


def test_listening_sockets_share_one_port() -> None:
    """One SO_REUSEPORT socket per worker id, all on the port the first one got."""
    from tx_swoole.process.master import listening_sockets

    socks = listening_sockets("127.0.0.1", 0, 16, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 3 and len(ports) == 1 and len({s.fileno() for s in socks}) == 3
    finally:
        for s in socks:
            s.close()


@pytest.mark.timeout(60)
def test_long_tcp_connections_during_reload(tmp_path: Path) -> None:
    """During a reload new connections reach the new worker while the old one's connections
    stay open until its worker_exit hook or the max_wait_time deadline closes them."""
    server, port, pidfile = start(
        tmp_path, {"worker_num": 1, "max_wait_time": 1.5}, app="tcp_echo:Echo", kind="tcp"
    )
    with server:
        old = socket.create_connection(("127.0.0.1", port), timeout=5)
        old.sendall(b"a")
        assert old.recv(1) == b"a"
        server.signal(signal.SIGUSR1)
        server.wait_for(rb"generation 2\) ready")
        new = socket.create_connection(("127.0.0.1", port), timeout=5)
        new.sendall(b"b")
        assert new.recv(1) == b"b"
        old.sendall(b"c")  # the draining worker still serves its connection
        assert old.recv(1) == b"c"
        started = time.monotonic()
        try:
            assert old.recv(1) == b""
        except ConnectionResetError:
            pass  # forced termination at the deadline aborts, as Swoole does
        assert 0.5 < time.monotonic() - started < 4
        server.wait_for(rb"still had 1 connections open after max_wait_time=1.5s")
        new.sendall(b"d")
        assert new.recv(1) == b"d"


@pytest.mark.timeout(60)
def test_worker_exit_hook_closes_long_connections_during_reload(tmp_path: Path) -> None:
    """The app's worker_exit hook runs while the old worker drains and closes its long
    connections gracefully (output flushed), long before max_wait_time."""
    server, port, _ = start(
        tmp_path, {"worker_num": 1, "max_wait_time": 10}, app="tcp_echo:Echo", kind="tcp",
        events={"worker_exit": "tcp_echo:on_worker_exit"},
    )  # fmt: skip
    with server:
        old = socket.create_connection(("127.0.0.1", port), timeout=8)
        old.sendall(b"a")
        assert old.recv(1) == b"a"
        started = time.monotonic()
        server.signal(signal.SIGUSR1)
        data = b""
        while not data.endswith(b"bye\n"):
            chunk = old.recv(100)
            assert chunk, data
            data += chunk
        assert old.recv(1) == b""  # then an orderly close
        assert time.monotonic() - started < 5
        server.wait_for(rb"generation 1\) drained and exited")


def test_status_and_reload_with_worker_num_0(tmp_path: Path) -> None:
    """With worker_num = 0, status reports the process, its connections and requests;
    reload is refused with a message saying why, and sends no signal."""
    pidfile = tmp_path / "inproc.pid"
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "http_hello:handler"},
                       {"worker_num": 0})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=EXAMPLES) as server:
        port = server.port()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/")
            conn.getresponse().read()
        cli = [sys.executable, "-m", "tx_swoole"]
        deadline = time.monotonic() + 15
        status: dict = {}
        while time.monotonic() < deadline:
            out = subprocess.run([*cli, "status", "--json", "--pidfile", str(pidfile)],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode == 0:
                status = json.loads(out.stdout)
                if status["workers"][0]["requests"] >= 3:
                    break
            time.sleep(0.1)
        assert status["master"]["worker_num"] == 0 and status["master"]["in_process"]
        [worker] = status["workers"]
        assert (worker["pid"], worker["connections"], worker["requests"]) == (
            server.proc.pid, 1, 3
        )  # fmt: skip
        text = subprocess.run([*cli, "status", "--pidfile", str(pidfile)],
                              capture_output=True, text=True)  # fmt: skip
        assert text.returncode == 0 and "serving in process" in text.stdout
        reload = subprocess.run([*cli, "reload", "--pidfile", str(pidfile)],
                                capture_output=True, text=True, timeout=10)  # fmt: skip
        assert reload.returncode == 2 and "worker_num = 0" in reload.stderr
        conn.close()
    assert not (tmp_path / "inproc.pid.status.json").exists()


def test_a_signal_before_the_reactor_runs_waits_for_it() -> None:
    """Between the service being built and twistd's reactor running, TERM or USR1 would take
    their default action (kill); held, they are handled once the reactor runs."""
    from tx_swoole.process._lifecycle import hold_signals

    ran: list[Any] = []
    later: list[Any] = []

    class NotRunning:
        def callWhenRunning(self, f: Any) -> None:  # noqa: N802
            later.append(f)

    before = signal.getsignal(signal.SIGUSR2)
    try:
        hold_signals(NotRunning(), {signal.SIGUSR2: lambda: ran.append("usr2")})
        os.kill(os.getpid(), signal.SIGUSR2)
        assert ran == [] and len(later) == 1  # alive, and waiting for the reactor
        later[0]()
        assert ran == ["usr2"]
    finally:
        signal.signal(signal.SIGUSR2, before)
