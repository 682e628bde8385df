"""The master's supervision logic with a fake process reactor and task.Clock."""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from tx_swoole.config import parse_config
from tx_swoole.process._control import encode
from tx_swoole.process.master import BOOT_BACKOFF, KILL_GRACE, MasterService, WorkerProcess


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[bytes] = []
        self.signals: list[str] = []
        self.config: dict[str, Any] = {}
        self.configClosed = False

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd in (0, 5)  # control messages, the config (then closed)
        if fd == 5:
            assert not self.configClosed
            self.config = json.loads(data)
        else:
            self.written.append(data)

    def closeChildFD(self, fd: int) -> None:
        assert fd == 5
        self.configClosed = True

    def signalProcess(self, sig: str) -> None:
        self.signals.append(sig)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.written]


class FakeReactor(task.Clock):
    running = False  # (never starts: what waits for the start, as the signals, never runs)

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def callWhenRunning(self, f: Any, *a: Any, **kw: Any) -> None:
        pass

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *a: Any) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


class Harness:
    def __init__(self, worker_num: int = 2, max_wait_time: float = 3, task_worker_num: int = 0):
        self.reactor = FakeReactor()
        self.spawned: list[tuple[WorkerProcess, FakeProcess, list[str], dict[int, Any]]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        config = parse_config({
            "server": {"type": "http", "port": 0, "app": "m:h"},
            "settings": {"worker_num": worker_num, "max_wait_time": max_wait_time,
                         "task_worker_num": task_worker_num},
            "events": {"task": "m:t"} if task_worker_num else {},
        })  # fmt: skip
        self.master = MasterService(
            config, reactor=self.reactor, spawn=self.spawn, sockets=[self.sock]
        )
        self.fatal: list[int] = []
        self.master.fatal = self.fatal.append  # type: ignore[method-assign]

    def spawn(self, proto: WorkerProcess, exe: str, args: list[str], env: Any, childFDs: Any):
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((proto, process, args, childFDs))
        proto.makeConnection(process)  # type: ignore[arg-type]
        return process

    def proto(self, pid: int) -> WorkerProcess:
        return next(p for p, proc, _, _ in self.spawned if proc.pid == pid)

    def process(self, pid: int) -> FakeProcess:
        return next(proc for _, proc, _, _ in self.spawned if proc.pid == pid)

    def ready(self, pid: int, **fields: Any) -> None:
        self.proto(pid).childDataReceived(4, encode("ready", pid=pid, **fields))

    def exit(self, pid: int, code: int = 0) -> None:
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)
        self.proto(pid).processEnded(Failure(reason))

    def pids(self) -> dict[int, int]:
        return {wid: w.pid for wid, w in self.master.workers.items()}

    def close(self) -> None:
        self.sock.close()
        if self.master.runDir:
            shutil.rmtree(self.master.runDir, ignore_errors=True)


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def test_spawns_workers_with_stable_ids_socket_and_control_channel(h: Harness) -> None:
    """worker_num fresh interpreters, ids 0..N-1, the listening socket on fd 3."""
    h.master.startService()
    assert h.pids() == {0: 1000, 1: 1001}
    _, _, args, fds = h.spawned[0]
    assert args[1:3] == ["-m", "tx_swoole.process.worker"]
    assert args[-5:-1] == ["0", "1", "", "worker"]
    assert args[-1] == h.master.runDir + "/peer-worker-0-1.sock"
    assert fds[3] == h.sock.fileno() and fds[0] == "w" and fds[4] == "r" and fds[5] == "w"
    process = h.spawned[0][1]
    assert process.configClosed and process.config["settings"]["worker_num"] == 2
    assert not any("{" in a for a in args)  # the config is not on the command line


def test_reload_starts_replacement_first_then_drains_old(h: Harness) -> None:
    """The old worker is told to drain only after its replacement reported ready."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    h.master.reload()
    assert h.pids() == {0: 1002, 1: 1003}
    assert h.process(1000).written == [] and h.process(1001).written == []
    h.ready(1002)
    assert h.process(1000).messages() == [{"type": "drain", "final": False}]
    assert h.process(1001).written == []
    h.ready(1003)
    assert h.process(1001).messages() == [{"type": "drain", "final": False}]
    h.exit(1000)
    h.exit(1001)
    assert h.master.reloading is None and h.master.retiring == []
    assert [w["generation"] for w in h.master.status()["workers"]] == [2, 2]


def test_reload_during_reload_queued_once(h: Harness) -> None:
    """A reload requested while one runs is queued (logged) and starts when it finishes;
    a third request meanwhile is ignored."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    assert h.master.reload() is not None
    with capturedLogs() as events:
        assert h.master.reload() is None
        assert h.master.reload() is None
    assert "queued" in events[0]["log_format"] and "ignored" in events[1]["log_format"]
    assert len(h.spawned) == 4
    h.ready(1002)
    h.ready(1003)  # first reload done: the queued one starts
    assert len(h.spawned) == 6 and h.master.generation == 3


def test_draining_worker_killed_after_max_wait_time(h: Harness) -> None:
    """A worker that will not exit is SIGKILLed after max_wait_time with a WARNING."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    h.proto(1000).childDataReceived(4, encode("stats", connections=7, requests=3))
    h.master.reload()
    h.ready(1002)
    h.reactor.advance(3 + KILL_GRACE - 0.01)
    assert h.process(1000).signals == []
    with capturedLogs() as events:
        h.reactor.advance(0.02)
    assert h.process(1000).signals == ["KILL"]
    warning = [e for e in events if e["log_level"].name == "warn"][0]
    assert warning["conns"] == 7 and "pid 1000" in warning["worker"]


def test_failed_replacement_keeps_old_worker(h: Harness) -> None:
    """A replacement that cannot boot (new code broken) leaves the old worker serving."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    h.master.reload()
    with capturedLogs():
        h.exit(1002, code=3)
    assert h.master.workers[0].pid == 1000 and h.process(1000).written == []
    assert h.fatal == []


def test_crashed_worker_respawned_with_its_id(h: Harness) -> None:
    """A worker that dies after being ready is respawned at once with the same id."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    with capturedLogs():
        h.exit(1001, code=-9)
    assert h.pids() == {0: 1000, 1: 1002}


def test_boot_failure_at_startup_stops_master(h: Harness) -> None:
    """When the app cannot boot at start-up, the master exits (code 3), no respawn loop."""
    h.master.startService()
    with capturedLogs():
        h.exit(1000, code=3)
    assert h.fatal == [3] and len(h.spawned) == 2


def test_boot_failure_later_backs_off_then_gives_up(h: Harness) -> None:
    """After the server was up, a worker that keeps failing to boot is retried with backoff
    and then given up with an ERROR — never respawned in a hot loop."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    with capturedLogs() as events:
        h.exit(1001, code=-9)  # crash: immediate respawn (pid 1002)
        for i, delay in enumerate(BOOT_BACKOFF):
            h.exit(1002 + i, code=3)
            count = len(h.spawned)
            h.reactor.advance(delay - 0.01)
            assert len(h.spawned) == count
            h.reactor.advance(0.01)
            assert len(h.spawned) == count + 1
        h.exit(1002 + len(BOOT_BACKOFF), code=3)
    assert 1 not in h.master.workers and h.fatal == []
    assert any("giving up" in e["log_format"] for e in events)


def test_recycle_message_replaces_that_worker(h: Harness) -> None:
    """A worker that reached max_request gets a replacement, then drains."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    h.proto(1000).childDataReceived(4, encode("recycle"))
    assert h.pids() == {0: 1002, 1: 1001}
    h.ready(1002)
    assert h.process(1000).messages() == [{"type": "drain", "final": False}]


def test_shutdown_drains_all_and_fires_when_exited(h: Harness) -> None:
    """stopService drains every worker (final) and fires once all have exited."""
    h.master.startService()
    h.ready(1000)
    h.ready(1001)
    d = h.master.stopService()
    assert h.process(1000).messages() == [{"type": "drain", "final": True}]
    assert not d.called
    h.exit(1000)
    h.reactor.advance(3 + KILL_GRACE)
    assert h.process(1001).signals == ["KILL"]
    h.exit(1001, code=-9)
    assert d.called and h.master.reload() is None


def test_worker_logs_reemitted_with_worker_tag(h: Harness) -> None:
    """Worker log events reach the master's log tagged with worker id and pid."""
    h.master.startService()
    event = {"log_format": "hello {x}", "x": 1, "log_level": {"__class_uuid__":
             "02e59486-f24d-46ad-8224-3acdf2a5732a", "name": "warn"}, "log_namespace": "app",
             "log_time": 0}  # fmt: skip
    with capturedLogs() as events:
        h.proto(1001).childDataReceived(2, json.dumps(event).encode() + b"\nplain text\n")
    assert events[0]["log_system"] == "app#warn worker 1 pid 1001"
    assert events[1]["line"] == "plain text" and events[1]["id"] == 1


def test_status_reports_workers(h: Harness) -> None:
    """status() has the master pid and each worker's id, pid, generation, counts."""
    h.master.startService()
    h.ready(1000)
    figures = {"connection_num": 2, "request_count": 40, "accept_count": 9, "close_count": 7}
    h.proto(1000).childDataReceived(4, encode("stats", connections=2, requests=40,
                                              stats=figures))  # fmt: skip
    h.proto(1001).childDataReceived(
        4,
        encode("stats", connections=1, requests=2, stats={"connection_num": 1, "request_count": 2}),
    )
    status = h.master.status()
    assert status["master"]["generation"] == 1
    assert status["workers"][0] | {"age": 0} == {
        "id": 0, "kind": "worker", "pid": 1000, "generation": 1, "state": "ready", "age": 0,
        "connections": 2, "requests": 40, "stats": figures,
    }  # fmt: skip
    totals = status["stats"]
    assert (totals["connection_num"], totals["request_count"], totals["accept_count"]) == (
        3, 42, 9,
    )  # fmt: skip


def test_sync_reload_stops_old_worker_first() -> None:
    """reload_async = false: the old worker drains and exits before its replacement starts."""
    h = Harness(worker_num=1)
    import dataclasses

    h.master.settings = dataclasses.replace(h.master.config.settings, reload_async=False)
    h.master.startService()
    h.ready(1000)
    h.master.reload()
    assert h.process(1000).messages() == [{"type": "drain", "final": False}]
    assert len(h.spawned) == 1
    h.exit(1000)
    assert h.pids() == {0: 1001}
    h.ready(1001)
    assert h.master.reloading is None
    h.close()


@pytest.mark.parametrize(("max_request", "grace", "low", "high"),
                         [(0, None, 0, 0), (500, None, 500, 750), (500, 0, 500, 500),
                          (100, 10, 100, 110)])  # fmt: skip
def test_max_request_jitter(max_request: int, grace: Any, low: int, high: int) -> None:
    """max_request is jittered by max_request_grace (default max_request // 2), like Swoole."""
    from tx_swoole.process.worker import max_request_limit
    from tx_swoole.settings import make_settings

    values = {"max_request": max_request}
    if grace is not None:
        values["max_request_grace"] = grace
    settings = make_settings(values)
    limits = {max_request_limit(settings, wid) for wid in range(50)}
    assert all(low <= x <= high for x in limits)
    if high - low > 10:
        assert len(limits) > 1  # jittered, so workers do not all recycle at once


# -- task workers ---------------------------------------------------------------------------------
@pytest.fixture
def t():
    harness = Harness(worker_num=2, task_worker_num=2)
    yield harness
    harness.close()


def kinds(h: Harness) -> list[tuple[str, int, int]]:
    return [(w["kind"], w["id"], w["pid"]) for w in h.master.status()["workers"]]


def announced(h: Harness, pid: int) -> list[tuple[int, str, int]]:
    return [(m["index"], m["path"], m["pid"]) for m in h.process(pid).messages()
            if m["type"] == "task_worker"]  # fmt: skip


def test_task_workers_spawn_without_the_socket_and_are_announced_to_every_worker(
    t: Harness,
) -> None:
    t.master.startService()
    (_, _, args0, fds0), (_, _, args1, _) = t.spawned[:2]  # the task workers come first
    assert args0[-4:-2] == ["", "task"] and args0[-1].endswith("task-0-1.sock")
    assert args0[-2].endswith("peer-task-0-1.sock")
    assert 3 not in fds0 and fds0[4] == "r"
    assert kinds(t) == [("worker", 0, 1002), ("worker", 1, 1003), ("task", 0, 1000),
                        ("task", 1, 1001)]  # fmt: skip
    t.ready(1000, path=args0[-1])
    assert announced(t, 1002) == announced(t, 1003) == [(0, args0[-1], 1000)]
    t.ready(1002)
    t.master.replace(0, "test")  # a new worker hears of the task workers already ready
    assert announced(t, 1004) == [(0, args0[-1], 1000)]
    assert announced(t, 1002)[-1] == (0, args0[-1], 1000)  # (the old one keeps them)
    t.ready(1001, path=args1[-1])
    for pid in (1002, 1003, 1004):  # the one being replaced too: it may still send tasks
        assert announced(t, pid)[-1] == (1, args1[-1], 1001)


def test_sigusr2_replaces_the_task_workers_only_new_first(t: Harness) -> None:
    t.master.startService()
    for pid in range(1000, 1004):
        t.ready(pid, path=f"/p{pid}")
    t.master.reloadTaskWorkers()
    new = [(args[-3], args[-1]) for _, _, args, _ in t.spawned[4:]]
    assert new == [("task", t.master.runDir + "/task-0-2.sock"),
                   ("task", t.master.runDir + "/task-1-2.sock")]  # fmt: skip
    assert not any(m["type"] == "drain" for m in t.process(1000).messages())
    t.ready(1004, path="/new0")
    assert t.process(1000).messages()[-1]["type"] == "drain"
    assert announced(t, 1002)[-1] == (0, "/new0", 1004)
    assert all(m["type"] != "drain" for pid in (1002, 1003) for m in t.process(pid).messages())


def test_a_crashed_task_worker_is_respawned_and_recycles_on_task_max_request(t: Harness) -> None:
    t.master.startService()
    for pid in range(1000, 1004):
        t.ready(pid, path=f"/p{pid}")
    t.exit(1001, code=-9)
    assert ("task", 1, 1004) in kinds(t)
    t.ready(1004, path="/p1004")
    t.proto(1000).childDataReceived(4, encode("recycle", pid=1000))
    assert t.spawned[-1][2][-3] == "task" and t.spawned[-1][1].pid == 1005


def test_shutdown_drains_the_workers_before_the_task_workers(t: Harness) -> None:
    t.master.startService()
    for pid in range(1000, 1004):
        t.ready(pid, path=f"/p{pid}")
    done = t.master.stopService()
    drained = lambda pid: any(m["type"] == "drain" for m in t.process(pid).messages())  # noqa: E731
    assert drained(1002) and drained(1003) and not drained(1000)
    t.exit(1002)
    t.exit(1003)
    assert drained(1000) and drained(1001) and not done.called
    t.exit(1000)
    t.exit(1001)
    assert done.called and not os.path.exists(t.master.runDir)
