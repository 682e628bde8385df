"""``[[process]]``: processes of the app's own run by a real master beside the workers:
messages both ways with a worker, a crash (SIGKILL) and a failing coroutine started again
with a back-off, kept through a reload (``reload = false``) or replaced by it (``reload =
true``), stopped on shutdown with their coroutine cancelled and their ``onStop`` hooks run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tx_swoole.config import parse_config
from tx_swoole.errors import ConfigError

from .support import ROOT, Twistd, pid_alive
from .test_multiprocess import status, wait_until

CONFIG = """\
[server]
type = "http"
port = 0
app = "tests.process_apps:handler"

[settings]
worker_num = 1
max_wait_time = 3

[events]
pipe_message = "tests.process_apps:on_pipe"

[[process]]
app = "tests.process_apps:consumer"

[[process]]
app = "tests.process_apps:flaky"

[[process]]
app = "tests.process_apps:plain"
name = "timer"
reload = true
"""


def get(port: int, path: str = "/") -> str:
    return subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, timeout=30).stdout.decode()  # fmt: skip


def processes(pidfile: Path) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in status(pidfile)["workers"] if w["kind"] == "process"}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_processes_message_restart_reload_and_stop(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text(CONFIG)
    pidfile = tmp_path / "master.pid"
    with Twistd(tmp_path / "server.toml", f"--pidfile={pidfile}", cwd=ROOT) as server:
        server.wait_for(rb"starting 3 processes: consumer, flaky, timer")
        port = server.port()
        wait_until(lambda: pidfile.with_name("master.pid.status.json").exists(), timeout=20)

        def ready() -> bool:
            found = processes(pidfile)
            return all(found.get(n, {}).get("state") == "ready" for n in ("consumer", "timer"))

        wait_until(ready, timeout=20)
        consumer = processes(pidfile)["consumer"]
        assert consumer["id"] == 0
        # process -> worker: ticks from worker id 1 (worker_num + task_worker_num + 0)
        wait_until(lambda: get(port).startswith("(1, ('tick', "), timeout=20)
        assert get(port).endswith(f", {consumer['pid']}))")
        # worker -> process, and back
        assert get(port, "/ask") == "True"
        wait_until(lambda: get(port, "/pong") == f"(1, ('pong', {consumer['pid']}))", timeout=20)
        # a coroutine that fails: started again, the back-off growing
        server.wait_for(rb"flaky gave up")
        server.wait_for(rb"process flaky \(pid \d+, generation 1\) exited \(code 1\); starting "
                        rb"it again in 0\.5s")  # fmt: skip
        server.wait_for(rb"process flaky .* exited \(code 1\); starting it again in 1\.0s")
        # a crash: started again with its id, the ticks carry on from the new one
        os.kill(consumer["pid"], signal.SIGKILL)
        server.wait_for(rb"process consumer \(pid %d, generation 1\) exited \(code -9\)"
                        % consumer["pid"])  # fmt: skip

        def new_consumer() -> int:
            c = processes(pidfile).get("consumer")
            return c["pid"] if c and c["pid"] != consumer["pid"] and c["state"] == "ready" else 0

        wait_until(lambda: new_consumer() > 0, timeout=20)
        wait_until(lambda: get(port).endswith(f", {new_consumer()}))"), timeout=20)
        # a reload replaces the worker and the reload = true process only
        before = processes(pidfile)
        server.signal(signal.SIGUSR1)
        server.wait_for(rb"reload to generation 2 finished", timeout=30)
        server.wait_for(rb"plain %d onStop ran" % before["timer"]["pid"])
        wait_until(lambda: processes(pidfile)["timer"]["generation"] == 2, timeout=20)
        after = processes(pidfile)
        assert after["consumer"]["pid"] == before["consumer"]["pid"]
        assert after["timer"]["pid"] != before["timer"]["pid"]
        pids = [w["pid"] for w in status(pidfile)["workers"]]
        server.signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        server.wait_for(rb"consumer %d stopping" % after["consumer"]["pid"])  # cancelled
        server.wait_for(rb"plain %d onStop ran" % after["timer"]["pid"])
    assert not any(pid_alive(p) for p in pids)
    text = server.output.decode()
    assert not re.search(r"process (consumer|timer) .*exited \(code 1\)", text)


def test_process_config_errors() -> None:
    good = {"server": {"app": "a:b"}, "settings": {"worker_num": 1}}
    for tables, message in (
        ({"process": {"app": "a:b"}}, "process must be an array of tables"),
        ({"process": [{"name": "x"}]}, r"\[\[process\]\] #1 app is missing"),
        ({"process": [{"app": "a:b", "relaod": True}]}, "did you mean reload"),
        ({"process": [{"app": "a:b", "reload": "yes"}]}, "reload = 'yes': expected true"),
        ({"process": [{"app": "a:b", "name": ""}]}, "name = '': expected a non-empty"),
        ({"process": [{"app": "a:b"}], "settings": {"worker_num": 0}}, "needs worker_num >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({**good, **tables})
    config = parse_config({**good, "process": [{"app": "m:run"}, {"app": "m:x", "name": "y",
                                                                 "reload": True}]})  # fmt: skip
    assert [(p.name, p.reload) for p in config.processes] == [("run", False), ("y", True)]
