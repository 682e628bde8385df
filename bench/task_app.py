"""What ``bench/tasks.py`` runs in each worker: C concurrent ``await server.task(x)`` loops for
DUR seconds once every task worker is connected, then the count in ``$BENCH_DIR/w<id>``."""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import defer, reactor, task

C = int(os.environ.get("BENCH_C", "32"))
DUR = float(os.environ.get("BENCH_DUR", "3"))
SIZE = int(os.environ.get("BENCH_SIZE", "0"))  # 0: the integer i; else bytes of that size


def on_task(server: Any, task_id: int, src: int, data: Any) -> Any:
    return data + 1 if isinstance(data, int) else data


def hello(request: Any, response: Any) -> None:
    response.end("bench")


def start(server: Any, worker_id: int) -> None:
    defer.ensureDeferred(_run(server, worker_id))


async def _run(server: Any, worker_id: int) -> None:
    dispatcher = server.tasks
    while len(dispatcher.channels) < server.settings.task_worker_num:
        await task.deferLater(reactor, 0.05, lambda: None)
    payload = b"x" * SIZE if SIZE else 1
    done = 0
    end = time.monotonic() + DUR

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < end:
            result = await server.task(payload)
            assert result == (2 if not SIZE else payload)
            done += 1

    await defer.gatherResults([defer.ensureDeferred(loop()) for _ in range(C)])
    with open(os.path.join(os.environ["BENCH_DIR"], f"w{worker_id}"), "w") as f:
        f.write(str(done / DUR))
