"""A reload in the middle of 200 open WebSocket connections (worker_num = 2): each connection
is closed with 1001 Going Away once the old worker drains, every message the server accepted is
answered before that close, and each client reconnects to the new workers."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tx_swoole.clients.websocket import WebSocketClient, connect
from tx_swoole.errors import WebSocketClosedError

from .support import ROOT, Twistd, write_config
from .test_multiprocess import ready_status

pytestmark = pytest.mark.integration
CONNECTIONS = 200


class Chatter:
    """Sends numbered messages one after the other until the server closes the connection."""

    def __init__(self, ws: WebSocketClient) -> None:
        self.ws, self.sent, self.echoed, self.mismatch = ws, 0, 0, 0
        self.closedWith: int | None = None

    async def run(self, started: defer.Deferred[None]) -> None:
        await self.ws.receive()  # welcome
        while True:
            self.sent += 1
            try:
                self.ws.send(f"m{self.sent}")
                answer = await self.ws.receive()
            except WebSocketClosedError as e:
                self.closedWith = e.code
                await self.ws.close()
                return
            self.echoed += 1
            self.mismatch += answer != f"m{self.sent}"
            if self.echoed == 3 and not started.called:
                started.callback(None)
            await task.deferLater(reactor, 0.02, lambda: None)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_reload_closes_with_1001_and_clients_reconnect(tmp_path: Path) -> None:
    pidfile = tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo"},
                       {"worker_num": 2, "max_wait_time": 10})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=ROOT) as server:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        generation = ready_status(pidfile, 2)["master"]["generation"]
        url = f"ws://127.0.0.1:{port}/"
        clients = [Chatter(ws) for ws in await defer.gatherResults(
            [defer.ensureDeferred(connect(url)) for _ in range(CONNECTIONS)]
        )]  # fmt: skip
        started: list[defer.Deferred[None]] = [defer.Deferred() for _ in clients]
        running = [defer.ensureDeferred(c.run(s)) for c, s in zip(clients, started, strict=True)]
        await defer.gatherResults(started)  # every connection is talking
        server.signal(signal.SIGUSR1)
        await defer.gatherResults(running)
        assert [c.closedWith for c in clients] == [1001] * CONNECTIONS
        assert sum(c.mismatch for c in clients) == 0
        assert all(c.echoed >= 3 and c.sent - c.echoed == 1 for c in clients)  # 1: refused
        again: list[Any] = await defer.gatherResults(
            [defer.ensureDeferred(connect(url)) for _ in range(CONNECTIONS)]
        )
        for ws in again:
            assert (await ws.receive()).startswith("welcome")
            ws.send("after")
            assert await ws.receive() == "after"
            await ws.close()
        assert ready_status(pidfile, 2)["master"]["generation"] == generation + 1
    assert b"still had" not in server.output  # every close handshake ended in time
