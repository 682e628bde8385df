"""The blocked-reactor watchdog: its check with a fake clock, and a real reactor held by a
handler (in a real server) reported once, with the stack."""

from __future__ import annotations

import http.client
import threading
from pathlib import Path
from typing import Any

from twisted.internet import task

from tx_swoole.process.watchdog import Watchdog

from .support import ROOT, Twistd, write_config


def test_a_stall_is_reported_once_with_the_stack_then_the_recovery() -> None:
    now = [100.0]
    clock = task.Clock()
    dog = Watchdog(clock, 1.0, "worker 0", clock=lambda: now[0])
    dog.beat()
    now[0] = 101.0
    assert dog.check(now[0]) is None  # exactly the timeout: not yet
    now[0] = 101.01
    stack = dog.check(now[0])
    assert stack is not None and "test_a_stall_is_reported_once" in stack  # this thread's
    now[0] = 105.0
    assert dog.check(now[0]) is None and dog.stalls == 1  # the same stall
    dog.beat()  # turns again
    now[0] = 106.5
    assert dog.check(now[0]) is not None and dog.stalls == 2  # a new one


def test_a_blocking_handler_is_named_in_the_warning(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, {"type": "http", "port": 0, "app": "tests.http_apps:blocking"},
        {"worker_num": 0, "reactor_stall_timeout": 0.3},
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = server.port()
        replies: list[Any] = []

        def get(path: str) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            replies.append(conn.getresponse().read())

        t = threading.Thread(target=get, args=("/?sleep=1.5",))
        t.start()
        t.join(30)
        server.wait_for(rb"the reactor turns again after")
        get("/stats")
    out = server.output.decode(errors="replace")
    assert out.count("reactor has not turned for over reactor_stall_timeout=0.3s") == 1
    assert "in blocking" in out and "time.sleep" in out and "task workers" in out
    assert replies[0] == b"slept" and b"'reactor_stall_count': 1" in replies[1]
