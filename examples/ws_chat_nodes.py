"""The chat room of ``ws_chat`` across several nodes: members on different nodes see each
other's messages, carried between nodes by Redis (:mod:`tx_swoole.process.nodes`).

Each worker makes its Redis client and its :class:`~tx_swoole.process.nodes.Nodes` in
``worker_start``; every member is registered (under its name, so ``send_user`` reaches it), and
joins, lines and leaves are broadcast to every node.  Environment: ``TX_SWOOLE_NODE`` (this
node's name, different on each node), ``REDIS_HOST``/``REDIS_PORT`` (127.0.0.1:6379), or
``REDIS_CLUSTER=host:port,host:port`` for a Redis Cluster.

Two nodes on one machine (the second config a copy with ``port = 9507``)::

    TX_SWOOLE_NODE=a twistd -n --pidfile= swoole -c examples/ws_chat_nodes.toml
    TX_SWOOLE_NODE=b twistd -n --pidfile=b.pid swoole -c examples/ws_chat_nodes_b.toml

then open http://127.0.0.1:9506/?name=alice and http://127.0.0.1:9507/?name=bob.
Delivery is at most once (pub/sub): see the module named above.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from ws_chat import MAX_TEXT, page  # noqa: F401  (page: the http_app, as in ws_chat)

from tx_swoole.clients.redis import RedisCluster, RedisPool
from tx_swoole.process.nodes import Nodes
from tx_swoole.protocols.http import Request
from tx_swoole.protocols.websocket import WebSocketProtocol

log = Logger("ws_chat_nodes")
redis: Any = None
nodes: Nodes | None = None


def _redis() -> Any:
    cluster = os.environ.get("REDIS_CLUSTER")
    if cluster:
        seeds = [(h, int(p)) for h, _, p in (a.rpartition(":") for a in cluster.split(","))]
        return RedisCluster(seeds, connect_timeout=1.0, command_timeout=1.0)
    host = os.environ.get("REDIS_HOST", "127.0.0.1")
    port = int(os.environ.get("REDIS_PORT", "6379"))
    return RedisPool(host, port, connect_timeout=1.0, command_timeout=1.0)


async def on_worker_start(server: Any, worker_id: int) -> None:
    global redis, nodes
    redis = _redis()
    nodes = Nodes(server, redis)
    await nodes.start()


async def on_worker_stop(server: Any, worker_id: int) -> None:
    if nodes is not None:
        await nodes.stop()
    if redis is not None:
        await redis.close()


def say(text: str) -> None:
    """Broadcast ``text`` to every member on every node."""
    assert nodes is not None, "on_worker_start makes it"
    nodes.broadcast(text).addErrback(lambda f: log.warn("broadcast failed: {f}", f=f.value))


class Chat(WebSocketProtocol):
    """One member of the room, on whichever node it connected to."""

    def connectionOpened(self, request: Request) -> None:
        assert nodes is not None
        self.name = (request.arg("name") or f"guest{self.connId}")[:40]
        nodes.register(self.connId, user=self.name).addCallback(
            lambda _: say(f"* {self.name} joined ({nodes.node if nodes else '?'})")
        )

    def messageReceived(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.strip():
            say(f"{self.name}: {message[:MAX_TEXT]}")

    def connectionClosed(self, code: int, reason: str) -> None:
        if hasattr(self, "name") and nodes is not None:
            nodes.unregister(self.connId)
            say(f"* {self.name} left")
