"""Apps and task handlers for the task worker tests (real masters)."""

from __future__ import annotations

import ast
import os
import time
from typing import Any

from tx_swoole.errors import TaskError
from tx_swoole.protocols.http import Request, Response

SERVER: Any = None


def worker_start(server: Any, worker_id: int) -> None:
    global SERVER
    SERVER = server


def add_one(server: Any, task_id: int, src: int, data: Any) -> Any:
    """Returns data + 1 and where it ran; records the run when asked (counting runs)."""
    if isinstance(data, dict):
        kind = data.get("kind")
        if kind == "raise":
            raise ValueError(f"asked to fail: {data.get('why')}")
        if kind == "sleep":  # blocks this task worker, as a CPU-heavy task would
            time.sleep(float(data["seconds"]))
            return "slept"
        if kind == "hold":  # says it started, then blocks
            open(os.path.join(data["dir"], f"started-{os.getpid()}"), "w").close()
            time.sleep(float(data["seconds"]))
            return "held"
        if kind == "lambda":
            return lambda: None
        if kind == "record":  # one line per run, in a file per process
            time.sleep(float(data.get("seconds", 0)))
            with open(os.path.join(data["dir"], f"runs-{os.getpid()}"), "a") as f:
                f.write(f"{data['id']}\n")
            return data["id"]
        if kind == "pid":
            return os.getpid()
        if kind == "size":
            return b"r" * int(data["n"])
    return data + 1


async def handler(request: Request, response: Response) -> None:
    """Runs the Python literal in the body as a task (headers ``x-timeout``, ``x-dst``);
    answers its repr, or 500 with the TaskError."""
    body = request.body.decode() if request.body else "1"
    data = ast.literal_eval(body)
    timeout = float(request.headers.get("x-timeout") or 0) or None
    dst = int(request.headers.get("x-dst") or -1)
    try:
        result = await SERVER.task(data, dstWorkerId=dst, timeout=timeout)
    except TaskError as e:
        response.status(500)
        response.end(f"{type(e).__name__}: {e}")
        return
    response.end(repr(result))
