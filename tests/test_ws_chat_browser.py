"""The chat example in a real browser: headless Chromium, two tabs, each sees the other's
messages.  Chromium is driven through its DevTools protocol, over our own WebSocket client."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tx_swoole.clients.websocket import WebSocketClient, connect

from .support import ROOT, Twistd, headless_chromium, write_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium; yields its DevTools browser WebSocket URL."""
    with headless_chromium(tmp_path / "profile") as url:
        yield url


class DevTools:
    """Commands over the browser's DevTools WebSocket, answers matched by id."""

    def __init__(self, ws: WebSocketClient) -> None:
        self.ws, self.next = ws, 0

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self.next += 1
        message: dict[str, Any] = {"id": self.next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(await self.ws.receive())
            if answer.get("id") == self.next:
                assert "error" not in answer, answer
                return answer["result"]

    async def tab(self, url: str) -> str:
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call("Target.attachToTarget", targetId=target["targetId"],
                                   flatten=True)  # fmt: skip
        return str(attached["sessionId"])

    async def js(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression,
                                 returnByValue=True)  # fmt: skip
        return result["result"].get("value")

    async def wait(self, session: str, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(session, expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            await task.deferLater(reactor, 0.1, lambda: None)


LOG = "Array.from(document.querySelectorAll('#log li')).map(li => li.textContent).join('\\n')"


def say(text: str) -> str:
    return (f"document.getElementById('text').value = {json.dumps(text)}; "
            "document.getElementById('say').requestSubmit(); true")  # fmt: skip


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_two_tabs_see_each_others_messages(chromium: str, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        {"type": "websocket", "port": 0, "app": "ws_chat:Chat", "http_app": "ws_chat:page"},
        {"worker_num": 0},
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT / "examples") as server:
        port = server.port()
        tools = DevTools(await connect(chromium, max_message=1 << 24))
        alice = await tools.tab(f"http://127.0.0.1:{port}/?name=alice")
        await tools.wait(alice, "document.body && document.body.dataset.state === 'open'")
        bob = await tools.tab(f"http://127.0.0.1:{port}/?name=bob")
        await tools.wait(bob, "document.body && document.body.dataset.state === 'open'")
        await tools.wait(alice, f"({LOG}).includes('* bob joined')")
        await tools.js(alice, say("hello from alice"))
        await tools.js(bob, say("hi alice <b>"))
        for tab in (alice, bob):
            log = await tools.wait(tab, f"({LOG}).includes('bob: hi alice <b>') && ({LOG})")
            assert "alice: hello from alice" in log and "bob: hi alice <b>" in log
        assert await tools.js(bob, "document.querySelector('#log b') === null")  # text, not HTML
        await tools.call("Target.closeTarget", targetId=(await _target_of(tools, bob)))
        await tools.wait(alice, f"({LOG}).includes('* bob left')")
        await tools.ws.close()


async def _target_of(tools: DevTools, session: str) -> str:
    targets = await tools.call("Target.getTargets")
    pages = [t for t in targets["targetInfos"] if "name=bob" in t["url"]]
    return str(pages[0]["targetId"])
