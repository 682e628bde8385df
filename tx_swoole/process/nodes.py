"""Push to a connection held by any worker of any node, through Redis.

Several tx_swoole nodes behind a load balancer each hold some of the users' connections.
``Nodes(server, redis, node_id)`` (one per worker, made in ``worker_start``) lets any worker
reach any of them:

- **Addresses.**  ``nodes.address(connId)`` is ``"NODE#CONNID"``: the node's id and the
  connection id (unique on its node across workers).  ``await nodes.send(address, data)``.
- **Presence.**  ``nodes.register(connId, user="alice")`` (in the open hook) records the
  connection under ``PREFIX:conn:ADDRESS`` (value: the node) and, with a user key, in the
  sorted set ``PREFIX:user:alice`` (score: when the entry expires).  The worker holding the
  connection refreshes both every ``ttl / 3`` seconds; ``unregister(connId)`` (in the close
  hook) removes them, and a connection that has closed is removed at the next refresh anyway.
  A node that dies leaves entries that expire after ``ttl``.
- **Delivery.**  Every worker subscribes to its node's channel ``PREFIX:node:NODE`` and to
  ``PREFIX:all``.  ``send``/``send_user``/``broadcast`` publish there; the worker of that node
  that holds the connection sends it (WebSocket: a message, text for ``str``; TCP: bytes).
  With a :class:`~tx_swoole.clients.redis.RedisCluster`, shard channels (``SPUBLISH``) keep
  each node's traffic on one shard.

**Delivery is at most once.**  Redis pub/sub keeps nothing: a message published while the
target's worker is not subscribed (restarting, its connection to Redis down), or while its
connection is between workers (``reload_handoff``), or to a node that just died, is lost, and
nothing says so (the count returned is of the workers that received it, not of the
connections that got it).  Build acknowledgements on top when a message must arrive.

Cost: one PUBLISH per send (one per node for ``send_user``, after one ZRANGEBYSCORE), each
received by every worker of the target node (each checks whether it holds the connection);
presence costs two commands per connection every ``ttl / 3`` seconds.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, task

from tx_swoole._log import SwooleLogger

__all__ = ["Nodes", "parse_address"]
log = SwooleLogger("tx_swoole.nodes")


def parse_address(address: str) -> tuple[str, int]:
    """``"NODE#CONNID"`` → (node, connId); ValueError for anything else."""
    node, sep, conn = address.rpartition("#")
    if not sep or not node or not conn.isdigit():
        raise ValueError(f"{address!r} is not a connection address (NODE#CONNID)")
    return node, int(conn)


def encode(ids: Iterable[int] | None, data: str | bytes) -> bytes:
    """A delivery: ``T`` (text) or ``B`` (bytes), the ids as JSON (null: every registered
    connection), a newline, then the data."""
    kind, body = (b"T", data.encode()) if isinstance(data, str) else (b"B", data)
    head = json.dumps(None if ids is None else list(ids)).encode()
    return kind + head + b"\n" + body


def decode(message: bytes) -> tuple[list[int] | None, str | bytes]:
    head, _, body = message.partition(b"\n")
    ids = json.loads(head[1:])
    if ids is not None and not (isinstance(ids, list) and all(type(i) is int for i in ids)):
        raise ValueError("ids are not a list of integers")
    return ids, (body.decode() if head[:1] == b"T" else body)


class Nodes:
    """Cross-node presence and push for one worker; see the module docstring.

    ``redis``: a ``RedisPool`` or ``RedisCluster`` made in this worker (bytes, no
    ``encoding``).  ``node_id``: this node's name, the same in all its workers and different
    from every other node's (default: ``TX_SWOOLE_NODE`` from the environment, else the host
    name).
    """

    def __init__(self, server: Any, redis: Any, node_id: str | None = None, *,
                 ttl: float = 30.0, prefix: str = "txs") -> None:  # fmt: skip
        self.server = server
        self.redis = redis
        self.node = node_id or os.environ.get("TX_SWOOLE_NODE") or socket.gethostname()
        if "#" in self.node:
            raise ValueError(f"node_id {self.node!r} may not contain '#'")
        self.ttl = ttl
        self.prefix = prefix
        self.registered: dict[int, str | None] = {}  # connId -> user key
        self._sharded = hasattr(redis, "spublish")
        self._pubsub: Any = None
        self._refresher: task.LoopingCall | None = None
        self.delivered = self.dropped = 0

    # -- names -------------------------------------------------------------------------------
    def address(self, connId: int) -> str:  # noqa: N803
        return f"{self.node}#{connId}"

    def channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _user(self, user: str) -> str:
        return f"{self.prefix}:user:{user}"

    def _conn(self, address: str) -> str:
        return f"{self.prefix}:conn:{address}"

    # -- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to this node's channel and start refreshing presence."""
        self._pubsub = self.redis.pubsub()
        channels = (self.channel(self.node), f"{self.prefix}:all")
        if self._sharded:
            for c in channels:
                await self._pubsub.ssubscribe(c, callback=self._received)
        else:
            await self._pubsub.subscribe(*channels, callback=self._received)
        self._refresher = task.LoopingCall(self._refresh)
        self._refresher.clock = self.redis.reactor
        self._refresher.start(self.ttl / 3, now=False)

    async def stop(self) -> None:
        """Remove this worker's presence entries and unsubscribe."""
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        for connId in list(self.registered):
            await self.unregister(connId)
        if self._pubsub is not None:
            await self._pubsub.close()
            self._pubsub = None

    # -- presence ----------------------------------------------------------------------------
    def register(self, connId: int, user: str | None = None) -> defer.Deferred[Any]:  # noqa: N803
        """Record connection ``connId`` of this worker (under ``user`` too, if given)."""
        self.registered[connId] = user
        return self._announce(connId, user)

    def _announce(self, connId: int, user: str | None) -> defer.Deferred[Any]:  # noqa: N803
        address = self.address(connId)
        p = self.redis.pipeline()
        p.set(self._conn(address), self.node, ex=max(1, int(self.ttl)))
        if user is not None:
            now = self.redis.reactor.seconds()
            p.zadd(self._user(user), {address: now + self.ttl})
        d: defer.Deferred[Any] = p.execute()
        return d

    def unregister(self, connId: int) -> defer.Deferred[Any]:  # noqa: N803
        """Forget connection ``connId`` (its presence entries are deleted)."""
        user = self.registered.pop(connId, None)
        address = self.address(connId)
        p = self.redis.pipeline()
        p.delete(self._conn(address))
        if user is not None:
            p.zrem(self._user(user), address)
        d: defer.Deferred[Any] = p.execute()
        return d

    def _refresh(self) -> defer.Deferred[Any]:
        """Renew the entries of the connections still here; drop the closed ones."""
        work = []
        for connId, user in list(self.registered.items()):
            if self._local(connId) is None:
                work.append(self.unregister(connId))
            else:
                work.append(self._announce(connId, user))
        d = defer.DeferredList(work, consumeErrors=True)
        return d.addCallback(self._refreshed)

    def _refreshed(self, results: list[Any]) -> None:
        failed = [r for ok, r in results if not ok]
        if failed:
            log.warn("presence refresh: {n} of {total} failed ({e})", n=len(failed),
                     total=len(results), e=failed[0].getErrorMessage())  # fmt: skip

    async def users(self, user: str) -> list[str]:
        """The addresses of ``user``'s connections (entries not expired)."""
        now = self.redis.reactor.seconds()
        key = self._user(user)
        found = await self.redis.zrangebyscore(key, now, "+inf")
        self.redis.execute("ZREMRANGEBYSCORE", key, "-inf", now).addErrback(lambda f: None)
        return [a.decode() if isinstance(a, bytes) else a for a in found]

    async def exists(self, address: str) -> bool:
        """Whether the connection at ``address`` is registered (and not expired)."""
        return bool(await self.redis.exists(self._conn(address)))

    # -- push --------------------------------------------------------------------------------
    def _publish(self, channel: str, message: bytes) -> defer.Deferred[Any]:
        if self._sharded:
            d: defer.Deferred[Any] = self.redis.spublish(channel, message)
        else:
            d = self.redis.publish(channel, message)
        return d

    def send(self, address: str, data: str | bytes) -> defer.Deferred[Any]:
        """Send ``data`` to the connection at ``address`` (``NODE#CONNID``), wherever it is
        held → the number of that node's workers that received it (at most once)."""
        node, connId = parse_address(address)
        return self._publish(self.channel(node), encode([connId], data))

    async def send_user(self, user: str, data: str | bytes) -> int:
        """Send ``data`` to every connection of ``user`` → connections it was published for."""
        by_node: dict[str, list[int]] = {}
        for address in await self.users(user):
            try:
                node, connId = parse_address(address)
            except ValueError:
                continue
            by_node.setdefault(node, []).append(connId)
        await defer.gatherResults([self._publish(self.channel(n), encode(ids, data))
                                   for n, ids in by_node.items()])  # fmt: skip
        return sum(len(ids) for ids in by_node.values())

    def broadcast(self, data: str | bytes) -> defer.Deferred[Any]:
        """Send ``data`` to every registered connection of every node."""
        return self._publish(f"{self.prefix}:all", encode(None, data))

    # -- receiving ---------------------------------------------------------------------------
    def _local(self, connId: int) -> Any:  # noqa: N803
        for table in self.server.tables:
            p = table.local(connId)
            if p is not None:
                return None if p.closing else p
        return None

    def _received(self, channel: Any, message: Any) -> None:
        try:
            ids, data = decode(message if isinstance(message, bytes) else message.encode())
        except ValueError as e:
            log.warn("undecodable message on {channel!r} dropped: {e}", channel=channel, e=e)
            return
        for connId in self.registered if ids is None else ids:
            p = self._local(connId)
            if p is None:
                continue  # another worker's, or gone
            if isinstance(data, str) and getattr(p, "ws", None) is None:
                data = data.encode()  # a TCP connection takes bytes
            if p.send(data):
                self.delivered += 1
            else:
                self.dropped += 1
