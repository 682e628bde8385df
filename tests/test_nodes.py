"""Cross-node push: the delivery format, then two real nodes (``twistd swoole``, 2 workers
each) running ``examples/ws_chat_nodes`` against one redis-server, with real WebSocket
clients on each node."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads
from websockets.sync.client import connect

from tests.support import Twistd, write_config
from tx_swoole.clients.redis import RedisPool
from tx_swoole.process.nodes import Nodes, decode, encode, parse_address

ROOT = Path(__file__).resolve().parent.parent


def test_delivery_format_and_addresses() -> None:
    assert decode(encode([3, 17], "héllo")) == ([3, 17], "héllo")
    assert decode(encode(None, b"\x00\n\xff")) == (None, b"\x00\n\xff")
    with pytest.raises(ValueError):
        decode(b'B["x"]\nabc')
    assert parse_address("node-a#17") == ("node-a", 17)
    assert parse_address("a#b#2") == ("a#b", 2)
    for bad in ("17", "a#", "#3", "a#x"):
        with pytest.raises(ValueError, match="not a connection address"):
            parse_address(bad)
    with pytest.raises(ValueError, match="may not contain"):
        Nodes(SimpleNamespace(tables=[]), None, "a#b")


def _node(tmp_path: Path, name: str, redis_port: int) -> Twistd:
    config = write_config(
        tmp_path, {"type": "websocket", "host": "127.0.0.1", "port": 0,
                   "app": "ws_chat_nodes:Chat", "http_app": "ws_chat_nodes:page"},
        {"worker_num": 2},
        {"worker_start": "ws_chat_nodes:on_worker_start",
         "worker_stop": "ws_chat_nodes:on_worker_stop"},
        name=f"{name}.toml",
    )  # fmt: skip
    return Twistd(config, f"--pidfile={tmp_path / name}.pid", cwd=ROOT / "examples",
                  env={"TX_SWOOLE_NODE": name, "REDIS_PORT": str(redis_port)})  # fmt: skip


def _until_heard(ws: Any, text: str) -> list[str]:
    heard = []
    while text not in heard:
        heard.append(ws.recv(timeout=15))
    return heard


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_members_on_two_nodes_see_each_other(tmp_path: Path, own_redis) -> None:
    with _node(tmp_path, "a", own_redis.port) as a, _node(tmp_path, "b", own_redis.port) as b:
        a_port, b_port = a.port(), b.port()
        for node in (a, b):
            node.wait_for(rb"generation 1\) ready", 15, count=2)  # both workers subscribed

        def chat() -> None:
            url = "ws://127.0.0.1:{}/chat?name={}"
            with connect(url.format(a_port, "alice")) as alice, \
                 connect(url.format(b_port, "bob")) as bob, \
                 connect(url.format(a_port, "carol")) as carol:  # fmt: skip
                _until_heard(alice, "* carol joined (a)")
                _until_heard(bob, "* carol joined (a)")  # joins on a reach b
                alice.send("hello from a")
                _until_heard(bob, "alice: hello from a")
                _until_heard(carol, "alice: hello from a")
                bob.send("hi from b")
                _until_heard(alice, "bob: hi from b")
                _until_heard(carol, "bob: hi from b")

        await threads.deferToThread(chat)
        # send_user from anywhere (here a third party with no connections of its own):
        # the presence set names bob's node, the message goes to that node's channel only.
        redis = RedisPool(port=own_redis.port)
        outsider = Nodes(SimpleNamespace(tables=[]), redis, "c")
        try:

            def listen(ready: Any) -> list[str]:
                with connect(f"ws://127.0.0.1:{b_port}/chat?name=dave") as dave:
                    heard = _until_heard(dave, "* dave joined (b)")
                    ready()
                    # dave is registered before his join is announced: the message sent to
                    # him may come first
                    if "just for dave" not in heard:
                        heard += _until_heard(dave, "just for dave")
                    return heard

            joined = threads.deferToThread(listen, lambda: None)
            addresses: list[str] = []
            while not addresses:
                addresses = await outsider.users("dave")
            assert addresses[0].startswith("b#")
            assert await outsider.exists(addresses[0])
            while await outsider.send_user("dave", "just for dave") == 0:
                pass
            assert (await joined).count("just for dave") == 1
            assert await outsider.send_user("nobody", "x") == 0
        finally:
            await redis.close()
