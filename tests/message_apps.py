"""Apps for the sendMessage tests: a worker or task worker writes what its pipe_message hook
got into a file named after itself."""

from __future__ import annotations

import ast
import os
from typing import Any

from tx_swoole.protocols.http import Request, Response


def on_pipe(server: Any, src: int, data: Any) -> None:
    text, where = data
    kind = "task" if getattr(server, "taskworker", False) else "worker"
    with open(os.path.join(where, f"got-{kind}-{server.workerId}"), "a") as f:
        f.write(f"{text} from {src}\n")


def send(request: Request, response: Response) -> Any:
    """The body is ``{'dst': N, 'dir': D, 'via_task': bool}``."""
    order = ast.literal_eval(request.body.decode())
    server = request.owner.server
    if order.get("via_task"):
        return _via_task(server, order, response)
    ok = server.sendMessage((f"hello from worker {server.workerId}", order["dir"]), order["dst"])
    return response.end(repr(ok))


async def _via_task(server: Any, order: dict[str, Any], response: Response) -> None:
    ok = await server.task(order)
    response.end(repr(ok))


def on_task(server: Any, task_id: int, src: int, order: dict[str, Any]) -> bool:
    return bool(server.sendMessage(("hello from a task worker", order["dir"]), order["dst"]))
