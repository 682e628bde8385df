"""``[[process]]`` callables and the hooks the user-process tests serve under ``twistd swoole``."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor, task
from twisted.logger import Logger

from tx_swoole.protocols.http import Request, Response

log = Logger("tests.process_apps")
LAST: dict[str, Any] = {}  # what this process's pipe_message hook got last


async def consumer(server: Any) -> None:
    """A queue consumer's loop: a tick to worker 0 every 0.1 s until it is cancelled."""
    n = 0
    try:
        while True:
            n += 1
            server.sendMessage(("tick", n, os.getpid()), 0)
            await task.deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
    finally:
        log.info("consumer {pid} stopping", pid=os.getpid())


async def flaky(server: Any) -> None:
    """Fails 0.2 s after it starts."""
    await task.deferLater(reactor, 0.2, lambda: None)  # type: ignore[arg-type]
    raise RuntimeError("flaky gave up")


def plain(server: Any) -> None:
    """Sets a timer up and returns: the process keeps running it."""
    task.LoopingCall(lambda: None).start(1.0)
    server.onStop(lambda s: log.info("plain {pid} onStop ran", pid=os.getpid()))


def on_pipe(server: Any, src: int, data: Any) -> None:
    """Workers keep the last message; a process answers ``ping`` with ``pong``."""
    if data == "ping":
        server.sendMessage(("pong", os.getpid()), src)
    elif isinstance(data, tuple) and data[0] == "pong":
        LAST["pong"] = (src, data)
    else:
        LAST["src"], LAST["data"] = src, data


def handler(request: Request, response: Response) -> Any:
    """``/ask`` pings the first process, ``/pong`` shows its last answer; anything else the
    last message."""
    if request.path == "/pong":
        return response.end(repr(LAST.get("pong")))
    if request.path == "/ask":
        table = request.owner.server  # (the worker's by-id API and messages)
        ok = table.sendMessage("ping", table.settings.worker_num)
        return response.end(str(ok))
    return response.end(repr((LAST.get("src"), LAST.get("data"))))
