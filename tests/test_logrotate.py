"""Log files in master mode: a real ``logrotate`` run moves twistd's ``--logfile`` aside and
signals the master (``SIGRTMIN``, Swoole's), and lines keep arriving in the new file."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tx_swoole.process._lifecycle import REOPEN_LOGS

from .support import ROOT, Twistd, write_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate"),
]


def wait_in(path: Path, pattern: bytes, timeout: float = 20.0) -> re.Match[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_bytes()) if path.exists() else None
        if found:
            return found
        time.sleep(0.05)
    text = path.read_bytes().decode(errors="replace") if path.exists() else "(no file)"
    raise AssertionError(f"{pattern!r} not in {path}:\n{text}")


@pytest.mark.timeout(90)
def test_logrotate_postrotate_reopens_the_masters_log(tmp_path: Path) -> None:
    assert REOPEN_LOGS == signal.SIGRTMIN
    logfile, pidfile = tmp_path / "server.log", tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:handler"},
                       {"worker_num": 1})  # fmt: skip
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        f"{logfile} {{\n  rotate 3\n  missingok\n  nocompress\n  postrotate\n"
        f"    kill -RTMIN $(cat {pidfile})\n  endscript\n}}\n"
    )
    with Twistd(cfg, f"--logfile={logfile}", f"--pidfile={pidfile}", cwd=ROOT) as server:
        wait_in(logfile, rb"worker 0 \(pid \d+, generation 1\) ready")
        out = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert out.returncode == 0, out.stderr
        rotated = tmp_path / "server.log.1"
        assert b"generation 1) ready" in rotated.read_bytes()
        wait_in(logfile, rb"log files reopened \(1\)")  # the new file, made by the master
        server.signal(signal.SIGUSR1)  # a reload: the master's and the worker's lines
        wait_in(logfile, rb"reload to generation 2 finished")
        wait_in(logfile, rb"worker 0 \(pid \d+, generation 2\) ready")
        assert b"generation 2" not in rotated.read_bytes()
        assert server.stop() == 0


def test_our_signal_handlers_go_in_right_after_the_reactors() -> None:
    """Ours are installed in the startup phase where the reactor installs its own, before
    anything waiting for it to run: a SIGTERM just after start never meets twistd's handler
    (which would end the process by re-raising it, exit -15); now if it runs already."""
    from twisted.internet.base import ReactorBase

    from tx_swoole.process._lifecycle import call_at_start

    class Reactor(ReactorBase):  # (no waker, no loop: only its startup phases)
        def installWaker(self) -> None:
            pass

    reactor = Reactor()
    seen: list[tuple[str, bool]] = []
    reactor.callWhenRunning(lambda: seen.append(("after startup", reactor.running)))
    call_at_start(reactor, lambda: seen.append(("ours", reactor.running)))
    reactor.startRunning(installSignalHandlers=False)
    assert seen == [("ours", True), ("after startup", True)]  # (running: its handlers are in)
    call_at_start(reactor, lambda: seen.append(("ours, running", reactor.running)))
    assert seen[-1] == ("ours, running", True)
