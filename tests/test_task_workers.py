"""Task workers in real masters: results and errors through HTTP, a task worker killed
mid-task, and tasks under load across SIGUSR2 and SIGUSR1 reloads (each task run once)."""

from __future__ import annotations

import http.client
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .support import ROOT, Twistd, write_config
from .test_multiprocess import status, wait_until

pytestmark = pytest.mark.integration
EVENTS = {"worker_start": "tests.task_apps:worker_start", "task": "tests.task_apps:add_one"}


def start(tmp: Path, **settings: Any) -> tuple[Twistd, int, Path]:
    pidfile = tmp / "master.pid"
    cfg = write_config(
        tmp, {"type": "http", "port": 0, "app": "tests.task_apps:handler"},
        {"worker_num": 2, "task_worker_num": 2, "max_wait_time": 5, **settings}, EVENTS,
    )  # fmt: skip
    server = Twistd(cfg, f"--pidfile={pidfile}", cwd=ROOT)
    port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
    server.wait_for(rb"\) ready", count=4)
    return server, port, pidfile


def run(port: int, data: str, **headers: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def title(pid: int) -> str:
    """What ``ps`` shows for ``pid``."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode()


def task_pids(pidfile: Path) -> dict[int, int]:
    return {w["id"]: w["pid"] for w in status(pidfile)["workers"] if w["kind"] == "task"}


@pytest.mark.timeout(60)
def test_results_errors_timeouts_and_what_cannot_cross(tmp_path: Path) -> None:
    server, port, pidfile = start(tmp_path, package_max_length=65536)
    with server:
        assert run(port, "41") == (200, "42")
        pids = {run(port, "{'kind': 'pid'}", **{"x-dst": str(i)})[1] for i in (0, 1)}
        assert {int(p) for p in pids} == set(task_pids(pidfile).values())
        status_, text = run(port, "{'kind': 'raise', 'why': 'testing'}")
        assert status_ == 500 and text.startswith("TaskFailedError: task ")
        assert "builtins.ValueError: asked to fail: testing" in text
        status_, text = run(port, "{'kind': 'sleep', 'seconds': 3}", **{"x-timeout": "0.5"})
        assert status_ == 500 and "TaskTimeoutError" in text and "0.5s" in text
        status_, text = run(port, "{'kind': 'lambda'}")
        assert status_ == 500 and "TaskSerializationError" in text and "pickle" in text
        status_, text = run(port, "{'kind': 'size', 'n': 100000}")
        assert status_ == 500 and "package_max_length=65536" in text
        status_, text = run(port, "41", **{"x-dst": "5"})
        assert status_ == 500 and "NoTaskWorkersError" in text
        assert run(port, "1") == (200, "2")  # everything still works
        kinds = Counter(w["kind"] for w in status(pidfile)["workers"])
        assert kinds == {"worker": 2, "task": 2}
        titles = {title(w["pid"]) for w in status(pidfile)["workers"]}
        assert titles == {
            f"tx_swoole: {n} (server.toml)"
            for n in ("worker #0", "worker #1", "task worker #0", "task worker #1")
        }
        assert title(server.proc.pid) == "tx_swoole: master (server.toml)"

        # the server-wide figures (each worker reports every second)
        def counted() -> bool:
            totals = status(pidfile)["stats"]
            return totals["task_count"] >= 8 and totals["request_count"] >= 9

        wait_until(counted, timeout=15)
        totals = status(pidfile)["stats"]
        assert totals["accept_count"] >= 9 and totals["tasking_num"] == 0
    server.wait_for(rb"task \d+ from worker \d raised builtins.ValueError: asked to fail: testing")
    assert b"Traceback" in server.output


@pytest.mark.timeout(60)
def test_a_task_worker_killed_mid_task_fails_that_task_and_is_respawned(tmp_path: Path) -> None:
    server, port, pidfile = start(tmp_path)
    with server:
        victim = task_pids(pidfile)[0]
        outcome: list[tuple[int, str]] = []
        hold = f"{{'kind': 'hold', 'seconds': 30, 'dir': {str(tmp_path)!r}}}"
        caller = threading.Thread(target=lambda: outcome.append(run(port, hold, **{"x-dst": "0"})))
        caller.start()
        wait_until(lambda: (tmp_path / f"started-{victim}").exists(), timeout=20)
        os.kill(victim, signal.SIGKILL)
        caller.join(30)
        status_, text = outcome[0]
        assert status_ == 500 and "TaskWorkerDiedError" in text and "task worker #0" in text
        server.wait_for(rb"task worker #0 \(pid \d+, generation 1\) ready", count=2)
        wait_until(lambda: task_pids(pidfile).get(0) not in (None, victim))
        assert run(port, "7", **{"x-dst": "0"}) == (200, "8")
        assert run(port, "8") == (200, "9")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reload_async", [True, False], ids=["async", "sync"])
def test_tasks_under_load_across_sigusr2_and_sigusr1_none_lost_none_run_twice(
    tmp_path: Path, reload_async: bool
) -> None:
    """Async reload: the replacement connects first and the old one gets nothing new; sync
    reload: the old one drains first, handing back its queued tasks, which wait for the
    replacement."""
    server, port, pidfile = start(tmp_path, reload_async=reload_async)
    answers: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def client(name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"{name}-{n}"
            data = f"{{'kind': 'record', 'id': {key!r}, 'seconds': 0.05, 'dir': {str(tmp_path)!r}}}"
            try:
                code, body = run(port, data)
            except OSError as e:
                code, body = 0, repr(e)
            answers.append((key, code, body))

    with server:
        threads = [threading.Thread(target=client, args=(f"c{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(answers) > 50, timeout=30)
        server.signal(signal.SIGUSR2)  # task workers only
        server.wait_for(rb"reload to generation 2 finished", timeout=30)
        server.wait_for(rb"task worker #\d \(pid \d+, generation 1\) drained and exited", count=2)
        assert b"reloading 0 workers and 2 task workers" in server.output
        seen = len(answers)
        wait_until(lambda: len(answers) > seen + 50, timeout=30)
        server.signal(signal.SIGUSR1)  # everyone
        server.wait_for(rb"reload to generation 3 finished", timeout=30)
        server.wait_for(rb"\(pid \d+, generation 2\) drained and exited", count=2, timeout=30)
        server.wait_for(rb"worker \d \(pid \d+, generation 1\) drained and exited", count=2)
        seen = len(answers)
        wait_until(lambda: len(answers) > seen + 50, timeout=30)
        stop.set()
        for t in threads:
            t.join(30)
    failed = [a for a in answers if a[1] != 200 or a[2] != repr(a[0])]
    assert not failed, failed[:5]
    runs = Counter()
    for path in tmp_path.glob("runs-*"):
        runs.update(path.read_text().split())
    assert set(runs) == {a[0] for a in answers}  # none lost
    assert [k for k, n in runs.items() if n > 1] == []  # none run twice
    assert len(list(tmp_path.glob("runs-*"))) >= 6  # three generations of two task workers


@pytest.mark.timeout(60)
def test_task_max_request_recycles_task_workers_without_failing_a_task(tmp_path: Path) -> None:
    server, port, pidfile = start(tmp_path, task_max_request=5)
    with server:
        first = set(task_pids(pidfile).values())
        answers = [run(port, str(i)) for i in range(40)]
        assert answers == [(200, str(i + 1)) for i in range(40)]
        server.wait_for(rb"task_max_request reached")
        wait_until(lambda: not first & set(task_pids(pidfile).values()), timeout=20)
