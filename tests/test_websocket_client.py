"""The Twisted WebSocket client against our server (a real ``twistd swoole``) and against an
independent one (``websockets``' threaded server, in this process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from websockets.sync.server import ServerConnection, serve

from tx_swoole.clients.websocket import connect
from tx_swoole.errors import WebSocketClosedError, WebSocketHandshakeError

from .support import ROOT, Twistd, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cfg = write_config(
        tmp_path_factory.mktemp("wsc"),
        {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo"},
        {"worker_num": 0, "package_max_length": 1 << 20, "websocket_compression": True},
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        yield twistd.port()


@pytest.fixture(scope="module")
def theirs() -> Iterator[int]:
    def echo(ws: ServerConnection) -> None:
        for message in ws:
            if message == "close please":
                ws.close(4001, "as asked")
                return
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, max_size=1 << 22) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()


@pytest_twisted.ensureDeferred
async def test_echo_ping_and_close_against_our_server(ours: int) -> None:
    ws = await connect(f"ws://127.0.0.1:{ours}/x?y=1", subprotocols=("chat",))
    assert ws.subprotocol == "chat"
    assert await ws.receive() == "welcome #" + str(await _id(ws)) + " to /x"
    for message in ("hi", b"\x00\x01", "é" * 50000):
        ws.send(message)
        assert await ws.receive() == message
    await ws.ping(b"are you there")
    await ws.close(1000, "done")
    assert ws.closeCode == 1000
    with pytest.raises(WebSocketClosedError):
        ws.send("late")
    with pytest.raises(WebSocketClosedError):
        await ws.receive()


async def _id(ws: Any) -> int:
    ws.send("ids")
    return int((await ws.receive()).split()[-1])


@pytest_twisted.ensureDeferred
async def test_server_initiated_close_and_compression(ours: int) -> None:
    ws = await connect(f"ws://127.0.0.1:{ours}/", compression=True)
    assert "permessage-deflate" in ws.responseHeaders.get("sec-websocket-extensions", "")
    await ws.receive()
    ws.send("zip " * 1000)
    assert await ws.receive() == "zip " * 1000
    ws.send("close")
    with pytest.raises(WebSocketClosedError) as closed:
        await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4000, "bye")
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_handshake_raises_with_its_status(ours: int) -> None:
    with pytest.raises(WebSocketHandshakeError) as refused:
        await connect(f"ws://127.0.0.1:{ours}/", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403


@pytest_twisted.ensureDeferred
async def test_against_an_independent_server(theirs: int) -> None:
    ws = await connect(f"ws://127.0.0.1:{theirs}/", compression=True)
    for message in ("text", b"\xff" * 70000, "ü" * 3):
        ws.send(message)
        assert await ws.receive() == message
    await ws.ping()
    ws.send("close please")
    with pytest.raises(WebSocketClosedError) as closed:
        await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4001, "as asked")
    await ws.close()  # the TCP connection is gone too


@pytest_twisted.ensureDeferred
async def test_a_message_over_the_clients_limit_closes_with_1009(theirs: int) -> None:
    ws = await connect(f"ws://127.0.0.1:{theirs}/", max_message=1000)
    ws.send(b"x" * 2000)  # echoed back: too big for this client
    with pytest.raises(WebSocketClosedError) as closed:
        await ws.receive()
    assert closed.value.code == 1009
    await ws.close()
