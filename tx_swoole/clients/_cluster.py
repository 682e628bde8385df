"""Redis Cluster: a pool per node, commands routed by key slot, redirections followed.

``RedisCluster(nodes=[(host, port), ...])`` has the command methods of
:class:`~tx_swoole.clients.redis.RedisPool`.  It reads the slot map with ``CLUSTER SHARDS``
(``CLUSTER SLOTS`` on servers without it) from the first node that answers, on first use, on a
timer (``refresh_interval``) and after errors, and sends each command on the pool of the node
that serves its slot, with the same implicit pipelining as a single pool.

- ``MOVED``: the slot is mapped to the new node at once, the command goes there, and the whole
  map is read again in the background.  ``ASK``: ``ASKING`` and the command go to the named
  node in one write, once; the map does not change.  ``TRYAGAIN`` and ``CLUSTERDOWN`` are
  retried after a short pause.  At most ``max_redirects`` hops per command.
- A node that cannot be reached is marked down and the map is re-read every
  ``FAILOVER_POLL`` seconds until every slot has a reachable primary again.  Commands for its
  slots wait for that (at most ``failover_timeout``, then
  :class:`~tx_swoole.errors.RedisClusterError`); commands that were in flight on it fail with
  :class:`~tx_swoole.errors.RedisConnectionError` (they may have run: retry only idempotent
  ones).  A reply never reaches the wrong caller: each node's connections keep their FIFO.
- A multi-key command whose keys are in different slots is refused before sending
  (:class:`~tx_swoole.errors.RedisCrossSlotError`).  Keyless commands go to any primary;
  ``DBSIZE``, ``KEYS``, ``FLUSHDB``, ``FLUSHALL`` and ``SCRIPT`` go to every primary, replies
  merged; ``scan_iter`` scans every primary.
- ``read_from_replicas=True``: read-only commands go round-robin to the slot's primary and its
  replicas (connections to replicas send ``READONLY``).
- ``pipeline()`` splits its commands by node, sends each node's share in one write, and answers
  in the caller's order (errors in place); ``pubsub()`` gives sharded pub/sub
  (``ssubscribe``, routed by channel slot and moved when the slot moves) and classic
  ``subscribe`` on one node, moved to another if that node goes down.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from tx_swoole._log import SwooleLogger
from tx_swoole.clients import _slots
from tx_swoole.clients._commands import IRedisCommands, RedisCommands, ScanCommands, Transform
from tx_swoole.clients._connection import RedisConnection
from tx_swoole.clients._pipeline import Pipeline, Script
from tx_swoole.clients._pool import RedisPool
from tx_swoole.clients._pubsub import Callback, PubSub
from tx_swoole.clients._resp import pack_command
from tx_swoole.clients._slots import Address, Topology
from tx_swoole.errors import (
    RedisClusterError,
    RedisConnectionError,
    RedisCrossSlotError,
    RedisPoolClosedError,
    RedisReplyError,
    RedisTimeoutError,
)

__all__ = ["ClusterPipeline", "ClusterPubSub", "NodePool", "RedisCluster"]
log = SwooleLogger("tx_swoole.redis.cluster")
FAILOVER_POLL = 0.25  # seconds between slot map reads while a node is down
RETRY_PAUSE = 0.05  # seconds before retrying TRYAGAIN / CLUSTERDOWN
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
_FOLLOWED = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")  # error replies the cluster follows


class NodePool(RedisPool):
    """The pool of one cluster node.  ``readonly``: a replica answering reads (each new
    connection sends ``READONLY``).  ``down``: the cluster saw it unreachable."""

    readonly = False
    down = False

    async def _connect(self) -> RedisConnection:
        conn = await super()._connect()
        if self.readonly:
            try:
                await conn.execute("READONLY")
            except BaseException:
                conn.abort(RedisConnectionError(f"{self.address}: READONLY refused"))
                raise
        return conn


@implementer(IRedisCommands)
class RedisCluster(RedisCommands, ScanCommands):
    """A Redis Cluster client with the command methods of ``RedisPool``; see the module
    docstring.  ``size`` and the timeouts apply to each node's pool."""

    def __init__(
        self,
        nodes: Iterable[tuple[str, int]] = (("127.0.0.1", 6379),),
        *,
        size: int = 10,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        tls: Any = None,
        encoding: str | None = None,
        health_check_interval: float = 30.0,
        idle_timeout: float = 0.0,
        read_from_replicas: bool = False,
        refresh_interval: float = 30.0,
        failover_timeout: float = 20.0,
        max_redirects: int = 5,
        reactor: IReactorTime | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        self.reactor: IReactorTime = reactor
        self.seeds: list[Address] = [(h, int(p)) for h, p in nodes]
        if not self.seeds:
            raise ValueError("RedisCluster needs at least one node to ask for the slot map")
        self.address = ",".join(f"{h}:{p}" for h, p in self.seeds)
        self.encoding = encoding
        self.readFromReplicas = read_from_replicas
        self.refreshInterval = refresh_interval
        self.failoverTimeout = failover_timeout
        self.maxRedirects = max_redirects
        self._poolArgs: dict[str, Any] = dict(
            size=size, username=username, password=password, connect_timeout=connect_timeout,
            command_timeout=command_timeout, acquire_timeout=acquire_timeout, tls=tls,
            encoding=encoding, health_check_interval=health_check_interval,
            idle_timeout=idle_timeout, reactor=reactor,
        )  # fmt: skip
        self.pools: dict[tuple[Address, bool], NodePool] = {}
        self.topology: Topology | None = None
        self._slotPools: list[NodePool | None] | None = None
        self._readers: dict[Address, list[NodePool]] = {}
        self._turn = 0
        self._refreshing: defer.Deferred[None] | None = None
        self._failing = False
        self._changed: list[defer.Deferred[None]] = []
        self._poll: Any = None
        self._timer: task.LoopingCall | None = None
        self._closed = False
        self._subscribers: list[ClusterPubSub] = []

    # -- nodes and the slot map ----------------------------------------------------------------
    def node(self, address: Address, readonly: bool = False) -> NodePool:
        """The pool of the node at ``address`` (made on first use)."""
        pool = self.pools.get((address, readonly))
        if pool is None:
            if self._closed:
                raise RedisPoolClosedError(f"cluster {self.address} is closed")
            pool = NodePool(address[0], address[1], **self._poolArgs)
            pool.readonly = readonly
            self.pools[(address, readonly)] = pool
        return pool

    def node_for(self, key: Any) -> NodePool:
        """The pool of the primary serving ``key``'s slot (after the map has been read)."""
        return self._primary(_slots.key_slot(key))

    def _primary(self, slot: int) -> NodePool:
        table = self._slotPools
        pool = table[slot] if table is not None else None
        if pool is None:
            raise RedisClusterError(f"slot {slot} is not served by any node of {self.address}")
        return pool

    def _down(self) -> list[NodePool]:
        return [p for p in self.pools.values() if p.down]

    def ready(self) -> defer.Deferred[None]:
        """Fires once the slot map has been read (at once when it has been)."""
        if self._slotPools is not None:
            return defer.succeed(None)
        return self.refresh()

    def refresh(self) -> defer.Deferred[None]:
        """Read the slot map again (one read at a time: callers share it)."""
        d: defer.Deferred[None] = defer.Deferred()
        self._changed.append(d)
        if self._refreshing is None:
            self._refreshing = defer.ensureDeferred(self._refresh())
            self._refreshing.addBoth(self._refreshed)
        return d

    def _nextMap(self) -> defer.Deferred[None]:
        """Fires after the next read of the map (the failover poll makes one soon)."""
        d: defer.Deferred[None] = defer.Deferred()
        self._changed.append(d)
        self._schedulePoll(force=True)
        return d

    def _refreshed(self, result: Any) -> None:
        self._refreshing = None
        waiting, self._changed = self._changed, []
        failed = isinstance(result, Failure)
        if failed and not self._failing:
            log.warn("cannot read the slot map of {address}: {e}", address=self.address,
                     e=result.getErrorMessage())  # fmt: skip
        self._failing = failed
        for d in waiting:
            if failed:
                d.errback(result)
            else:
                d.callback(None)
        self._schedulePoll()

    def _schedulePoll(self, force: bool = False) -> None:
        if self._closed or self._poll is not None:
            return
        # While a primary in the map is down (a failover under way), or someone waits for
        # the next map; a seed that is gone for good is not polled for.
        if force or any(p.down for p in self.primaries()):

            def poll() -> None:
                self._poll = None
                self.refresh().addErrback(lambda f: None)

            self._poll = self.reactor.callLater(FAILOVER_POLL, poll)

    async def _refresh(self) -> None:
        known = [a for (a, ro) in self.pools if not ro]
        candidates = list(dict.fromkeys([*known, *self.seeds]))
        random.shuffle(candidates)
        candidates.sort(key=lambda a: self.node(a).down)  # reachable nodes first
        errors = []
        for address in candidates:
            pool = self.node(address)
            try:
                topology = await self._readTopology(pool)
            except _UNREACHABLE as e:
                pool.down = True
                errors.append(f"{address[0]}:{address[1]}: {e}")
                continue
            except RedisReplyError as e:
                errors.append(f"{address[0]}:{address[1]}: {e}")
                continue
            pool.down = False
            self._apply(topology)
            self._probeDown()
            return
        raise RedisClusterError(f"no node of {self.address} gave the slot map: "
                                + "; ".join(errors))  # fmt: skip

    async def _readTopology(self, pool: NodePool) -> Topology:
        try:
            reply = await pool.execute("CLUSTER", "SHARDS")
            return _slots.parse_shards(reply, pool.host)
        except RedisReplyError as e:
            if "unknown" not in str(e).lower():
                raise
        return _slots.parse_slots(await pool.execute("CLUSTER", "SLOTS"), pool.host)

    def _probeDown(self) -> None:
        """Nodes marked down that still serve slots: PING each in the background (their
        pools back off); one that answers is up again."""
        serving = set(self.topology.replicas) if self.topology else set()
        for pool in self._down():
            if (pool.host, pool.port) in serving and not pool.readonly:

                def up(_: Any, pool: NodePool = pool) -> None:
                    pool.down = False

                pool.ping().addCallbacks(up, lambda f: None)

    def _apply(self, topology: Topology) -> None:
        first = self._slotPools is None
        self.topology = topology
        by_address = {a: self.node(a) for a in topology.replicas}
        self._slotPools = [by_address[a] if a is not None else None for a in topology.slots]
        self._readers = {a: [by_address[a], *(self.node(r, readonly=True) for r in rs)]
                         for a, rs in topology.replicas.items()}  # fmt: skip
        for pool in by_address.values():
            if (pool.host, pool.port) in topology.failed:
                pool.down = True
        if first and self.refreshInterval and self._timer is None:
            self._timer = task.LoopingCall(lambda: self.refresh().addErrback(lambda f: None))
            self._timer.clock = self.reactor
            self._timer.start(self.refreshInterval, now=False)
        for subscriber in self._subscribers:
            subscriber.slot_map_changed()

    def _nodeFailed(self, pool: NodePool) -> None:
        if not pool.down:
            pool.down = True
            log.warn("cluster node {address} unreachable: re-reading the slot map",
                     address=pool.address)  # fmt: skip
        self.refresh().addErrback(lambda f: None)

    async def _reachable(self, slot: int, deadline: float) -> NodePool:
        """The primary of ``slot``, waiting (until ``deadline``) while it is down."""
        while True:
            pool = self._primary(slot)
            if not pool.down:
                return pool
            if self.reactor.seconds() >= deadline:
                raise RedisClusterError(
                    f"slot {slot}: its primary {pool.address} is unreachable and no replica "
                    f"took over within failover_timeout={self.failoverTimeout}s"
                )
            try:
                await self._nextMap()
            except RedisClusterError:
                pass  # no node answered this time; the poll goes on until the deadline

    # -- the command path ----------------------------------------------------------------------
    def call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        """Run the command ``args``; ``transform`` converts its reply (what every command
        method calls)."""
        table = self._slotPools
        if table is not None and len(args) > 1 and args[0] in _FIRST_KEY:
            pool = table[_slots.key_slot(args[1])]
            if pool is not None and pool.shared and not pool.down:
                if self.readFromReplicas and args[0] in _slots.READ_ONLY:
                    pool = self._reader(pool)
                d = pool.call(args, transform)
                d.addErrback(self._failed, pool, args, transform)
                return d
        return defer.ensureDeferred(self._route(args, transform))

    _call = call

    def _reader(self, primary: NodePool) -> NodePool:
        readers = self._readers.get((primary.host, primary.port))
        if not readers:
            return primary
        self._turn += 1
        pool = readers[self._turn % len(readers)]
        return primary if pool.down else pool

    def _failed(self, f: Failure, pool: NodePool, args: tuple[Any, ...],
                transform: Transform) -> Any:  # fmt: skip
        e = f.value
        if isinstance(e, RedisReplyError) and str(e).startswith(_FOLLOWED):
            return defer.ensureDeferred(self._retry(e, pool, args, transform, 1, None))
        if isinstance(e, _UNREACHABLE):
            self._nodeFailed(pool)
        return f

    async def _retry(self, e: RedisReplyError, pool: NodePool, args: tuple[Any, ...],
                     transform: Transform, hops: int, deadline: float | None) -> Any:  # fmt: skip
        """Follow a MOVED/ASK/TRYAGAIN/CLUSTERDOWN reply (else raise it)."""
        message = str(e)
        redirect = _slots.parse_redirect(message, pool.address)
        if redirect is None and not message.startswith(_FOLLOWED):
            raise e
        if redirect is None:  # TRYAGAIN, CLUSTERDOWN: pause and retry, up to failover_timeout
            now = self.reactor.seconds()
            if deadline is None:
                deadline = now + self.failoverTimeout
            if now >= deadline:
                raise RedisClusterError(f"{args[0]!r}: the cluster kept answering {message} for "
                                        f"failover_timeout={self.failoverTimeout}s")  # fmt: skip
            down = message.startswith("CLUSTERDOWN")
            await task.deferLater(self.reactor, FAILOVER_POLL if down else RETRY_PAUSE)
            if down:
                await self.refresh()
            return await self._route(args, transform, hops - 1, deadline)
        if hops > self.maxRedirects:
            raise RedisClusterError(f"{args[0]!r} redirected more than max_redirects="
                                    f"{self.maxRedirects} times; last: {message}")  # fmt: skip
        target = self.node(redirect.address)
        if redirect.kind == "ASK":
            conn = await target.shared_connection()
            data = pack_command(("ASKING",)) + pack_command(args)
            try:
                return await conn.send(data, transform, count=2)
            except RedisReplyError as again:
                return await self._retry(again, target, args, transform, hops + 1, deadline)
        table = self._slotPools
        if table is not None:
            table[redirect.slot] = target
        self.refresh().addErrback(lambda f: None)
        return await self._route(args, transform, hops + 1, deadline)

    async def _route(self, args: tuple[Any, ...], transform: Transform, hops: int = 0,
                     deadline: float | None = None) -> Any:  # fmt: skip
        if self._closed:
            raise RedisPoolClosedError(f"cluster {self.address} is closed")
        await self.ready()
        if deadline is None:
            deadline = self.reactor.seconds() + self.failoverTimeout
        name = _slots.command_name(args)
        if name in _slots.FANOUT:
            return await self._fanout(name, args, transform)
        slot = await self._slotOf(name, args)
        if slot is None:
            pool = self._anyPrimary()
        else:
            pool = await self._reachable(slot, deadline)
            if self.readFromReplicas and name in _slots.READ_ONLY:
                pool = self._reader(pool)
        try:
            conn = await pool.shared_connection()
        except _UNREACHABLE:
            self._nodeFailed(pool)  # nothing was sent: wait for the map, then try again
            if slot is None or self.reactor.seconds() >= deadline:
                raise
            return await self._route(args, transform, hops, deadline)
        try:
            return await conn.send(pack_command(args), transform)
        except RedisReplyError as e:
            return await self._retry(e, pool, args, transform, hops + 1, deadline)
        except _UNREACHABLE:
            self._nodeFailed(pool)
            raise

    async def _slotOf(self, name: str, args: tuple[Any, ...]) -> int | None:
        spec = _slots.spec_for(name)
        if spec is None:
            spec = await self._learn(name)
        if spec is None:  # keys that move with the arguments: ask the server for them
            keys = await self._anyPrimary().execute("COMMAND", "GETKEYS", *args)
            return _slots.command_slot(name, keys)
        return _slots.command_slot(name, _slots.command_keys(args, spec))

    async def _learn(self, name: str) -> _slots.Spec | None:
        spec = _slots.spec_from_command_info(
            await self._anyPrimary().execute("COMMAND", "INFO", name)
        )
        if spec is not None:
            _slots.learn(name, spec)
        return spec

    def slot_of(self, args: tuple[Any, ...]) -> int | None:
        """The slot of the command ``args`` by the built-in table (None: keyless or not
        known here).  Raises :class:`RedisCrossSlotError`."""
        name = _slots.command_name(args)
        spec = _slots.spec_for(name)
        if spec is None:
            return None
        return _slots.command_slot(name, _slots.command_keys(args, spec))

    def _anyPrimary(self) -> NodePool:
        primaries = [p for p in self.primaries() if not p.down] or self.primaries()
        if not primaries:
            raise RedisClusterError(f"no primary known in {self.address}")
        self._turn += 1
        return primaries[self._turn % len(primaries)]

    def primaries(self) -> list[NodePool]:
        """The pools of the primaries in the slot map."""
        if self.topology is None:
            return []
        return [self.node(a) for a in self.topology.primaries]

    async def _fanout(self, name: str, args: tuple[Any, ...], transform: Transform) -> Any:
        outcomes = await defer.DeferredList(
            [p.call(args, transform) for p in self.primaries()], consumeErrors=True
        )
        for ok, value in outcomes:
            if not ok:
                value.raiseException()
        return _slots.FANOUT[name]([value for _, value in outcomes])

    # -- what a pool has beyond the command methods ------------------------------------------
    def pipeline(self) -> ClusterPipeline:
        """A batch split by node: each node's commands in one write, answers in order."""
        return ClusterPipeline(self)

    @asynccontextmanager
    async def client(self, key: Any) -> AsyncIterator[RedisConnection]:
        """Check out a connection of the node serving ``key`` (blocking commands, WATCH)."""
        await self.ready()
        async with self.node_for(key).client() as conn:
            yield conn

    async def transaction(
        self,
        func: Callable[[RedisConnection], Awaitable[Iterable[tuple[Any, ...]]]],
        *watch: Any,
        retries: int = 10,
        key: Any = None,
    ) -> list[Any]:
        """As ``RedisPool.transaction``, on the node serving the watched keys (or ``key``):
        every key of the transaction must be in that slot."""
        keys = [*watch, *([] if key is None else [key])]
        if not keys:
            raise ValueError("a cluster transaction needs a watched key or key=... to choose "
                             "its node")  # fmt: skip
        slot = _slots.command_slot("WATCH", keys)
        assert slot is not None
        await self.ready()
        return await self._primary(slot).transaction(func, *watch, retries=retries)

    async def _keyed(self, name: str, keys: list[Any]) -> NodePool:
        await self.ready()
        slot = _slots.command_slot(name, keys)
        return await self._reachable(slot or 0, self.reactor.seconds() + self.failoverTimeout)

    def blpop(self, keys: Iterable[Any], timeout: float = 0) -> defer.Deferred[Any]:
        keys = list(keys)
        return defer.ensureDeferred(self._blocking("BLPOP", keys, timeout))

    def brpop(self, keys: Iterable[Any], timeout: float = 0) -> defer.Deferred[Any]:
        keys = list(keys)
        return defer.ensureDeferred(self._blocking("BRPOP", keys, timeout))

    async def _blocking(self, name: str, keys: list[Any], timeout: float) -> Any:
        pool = await self._keyed(name, keys)
        return await (pool.blpop if name == "BLPOP" else pool.brpop)(keys, timeout)

    def xread(self, streams: dict[Any, Any], count: int | None = None,
              block: int | None = None) -> defer.Deferred[Any]:  # fmt: skip
        async def run() -> Any:
            pool = await self._keyed("XREAD", list(streams))
            return await pool.xread(streams, count, block)

        return defer.ensureDeferred(run())

    def register_script(self, source: str) -> Script:
        """A Lua script run on the node of its keys (EVALSHA, EVAL when not cached there)."""
        return Script(self, source)

    def pubsub(self) -> ClusterPubSub:
        """Sharded pub/sub (``ssubscribe``) and classic pub/sub on one node."""
        subscriber = ClusterPubSub(self)
        self._subscribers.append(subscriber)
        return subscriber

    def spublish(self, channel: Any, message: Any) -> Any:
        """SPUBLISH to a shard channel (on the node serving its slot)."""
        return self._call(("SPUBLISH", channel, message))

    async def _scanAll(self, match: Any, count: int | None) -> AsyncIterator[Any]:
        await self.ready()
        for pool in self.primaries():
            async for key in pool.scan_iter(match, count):
                yield key

    def scan_iter(self, match: Any = None, count: int | None = None) -> AsyncIterator[Any]:
        """Every key of every primary (SCAN on each in turn)."""
        return self._scanAll(match, count)

    async def close(self) -> None:
        """Close every node's pool and the subscribers; later calls fail."""
        self._closed = True
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        for subscriber in list(self._subscribers):
            await subscriber.close()
        await defer.DeferredList([defer.ensureDeferred(p.close()) for p in self.pools.values()])


# The commands that take their one key first: the fast path routes them without a table walk.
_FIRST_KEY = _slots.single_key_commands()


class ClusterPipeline(Pipeline):
    """Commands queued with the usual methods; ``await execute()`` sends each node's share in
    one write (in parallel) and answers in the order queued, errors in place: a command whose
    keys span slots gets :class:`RedisCrossSlotError`, one that was redirected is sent again
    where the cluster says."""

    cluster: RedisCluster

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__(cluster)  # type: ignore[arg-type]
        self.cluster = cluster

    async def _run(self, commands: list[tuple[tuple[Any, ...], Transform]]) -> list[Any]:
        cluster = self.cluster
        await cluster.ready()
        results: list[Any] = [None] * len(commands)
        slots: dict[int, int] = {}  # command index -> slot
        alone: list[int] = []  # fan-out commands and commands of unknown shape: one by one
        for i, (args, _) in enumerate(commands):
            try:
                slot = cluster.slot_of(args)
            except RedisCrossSlotError as e:
                results[i] = e
                continue
            if slot is None:
                alone.append(i)
            else:
                slots[i] = slot
        singles = [cluster.call(*commands[i]) for i in alone]
        # Rounds: each node's share in one write, in the order queued; what was redirected
        # goes again in the next round (ASK: after ASKING, to the node named), still in order.
        todo: list[int] = list(slots)
        asked: dict[int, NodePool] = {}
        hops, deadline = 0, cluster.reactor.seconds() + cluster.failoverTimeout
        while True:
            groups: dict[NodePool, list[int]] = {}
            for i in todo:
                pool = asked.get(i) or cluster._primary(slots[i])
                groups.setdefault(pool, []).append(i)
            jobs = [(indexes, defer.ensureDeferred(self._send(pool, commands, indexes, asked)))
                    for pool, indexes in groups.items()]  # fmt: skip
            outcomes = await defer.DeferredList([d for _, d in jobs], consumeErrors=True)
            todo, asked = [], {}
            paused = False
            for (indexes, _), (_, replies) in zip(jobs, outcomes, strict=True):
                for i, reply in zip(indexes, replies, strict=True):
                    results[i] = reply
                    if not (isinstance(reply, RedisReplyError)
                            and str(reply).startswith(_FOLLOWED)):  # fmt: skip
                        continue
                    todo.append(i)
                    redirect = _slots.parse_redirect(str(reply), "")
                    if redirect is None:
                        paused = True
                    elif redirect.kind == "ASK":
                        asked[i] = cluster.node(redirect.address)
                    elif cluster._slotPools is not None:
                        cluster._slotPools[redirect.slot] = cluster.node(redirect.address)
            if paused and cluster.reactor.seconds() < deadline:
                await task.deferLater(cluster.reactor, FAILOVER_POLL)  # TRYAGAIN, CLUSTERDOWN
            elif todo and hops < cluster.maxRedirects:
                hops += 1
            else:
                break
            todo.sort()
            if len(asked) < len(todo):
                cluster.refresh().addErrback(lambda f: None)
        if singles:
            answered = await defer.DeferredList(singles, consumeErrors=True)
            for i, (ok, value) in zip(alone, answered, strict=True):
                results[i] = value if ok else value.value
        return results

    async def _send(self, pool: NodePool, commands: list[tuple[tuple[Any, ...], Transform]],
                    indexes: list[int], asked: dict[int, NodePool]) -> list[Any]:  # fmt: skip
        batch: list[tuple[tuple[Any, ...], Transform]] = []
        for i in indexes:
            if i in asked:
                batch.append((("ASKING",), None))
            batch.append(commands[i])
        try:
            conn = await pool.shared_connection()
            replies: list[Any] = await conn.send_many(batch)
        except _UNREACHABLE as e:
            self.cluster._nodeFailed(pool)
            return [e] * len(indexes)
        except Exception as e:
            return [e] * len(indexes)
        if asked:  # drop ASKING's own answers
            it = iter(replies)
            replies = [(next(it), next(it))[1] if i in asked else next(it) for i in indexes]
        return replies


class ClusterPubSub:
    """Pub/sub over a cluster: ``ssubscribe``/``sunsubscribe`` shard channels on the node
    serving each channel's slot (moved when the slot moves: after a failover or a
    resharding), ``subscribe``/``psubscribe`` classic channels on one node (moved to another
    when it goes down).  Callbacks as :class:`~tx_swoole.clients.redis.PubSub`'s."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._shards: dict[Address, PubSub] = {}
        self._where: dict[Any, Address] = {}  # shard channel -> the node it is subscribed on
        self._callbacks: dict[Any, Callback] = {}
        self._home: PubSub | None = None

    def _subscriber(self, address: Address) -> PubSub:
        ps = self._shards.get(address)
        if ps is None:
            ps = self._shards[address] = PubSub(self.cluster.node(address), sharded=True)
        return ps

    async def ssubscribe(self, *channels: Any, callback: Callback) -> None:
        """Subscribe to shard channels; ``callback(channel, message)`` gets each message."""
        await self.cluster.ready()
        groups: dict[int, list[Any]] = {}
        for c in channels:
            groups.setdefault(_slots.key_slot(c), []).append(c)
        for slot, group in groups.items():
            pool = await self.cluster._reachable(slot, self.cluster.reactor.seconds()
                                                 + self.cluster.failoverTimeout)  # fmt: skip
            address = (pool.host, pool.port)
            for c in group:
                self._where[c], self._callbacks[c] = address, callback
            await self._subscriber(address).subscribe(*group, callback=callback)

    async def sunsubscribe(self, *channels: Any) -> None:
        for c in channels:
            address = self._where.pop(c, None)
            self._callbacks.pop(c, None)
            if address is not None:
                self._subscriber(address).drop(c)

    def slot_map_changed(self) -> None:
        """The slot map changed: move shard channels whose slot is now served elsewhere, and
        the classic subscriber off a node that is down."""
        cluster = self.cluster
        for c, address in list(self._where.items()):
            try:
                pool = cluster._primary(_slots.key_slot(c))
            except RedisClusterError:
                continue
            now = (pool.host, pool.port)
            if now != address and not pool.down:
                self._subscriber(address).drop(c)
                self._where[c] = now
                d = self._subscriber(now).subscribe(c, callback=self._callbacks[c])
                defer.ensureDeferred(d).addErrback(
                    lambda f: log.failure("moving a shard channel failed", f)
                )
        home = self._home
        if home is not None and isinstance(home.pool, NodePool) and home.pool.down:
            self._home = self._newHome(home)
            defer.ensureDeferred(home.close()).addErrback(lambda f: None)

    def _newHome(self, old: PubSub | None) -> PubSub:
        ps = PubSub(self.cluster._anyPrimary())
        if old is not None:
            ps.channels, ps.patterns = dict(old.channels), dict(old.patterns)
            if ps.channels or ps.patterns:
                ps.start()  # resubscribes all of them once connected
        return ps

    async def _classic(self) -> PubSub:
        await self.cluster.ready()
        if self._home is None:
            self._home = self._newHome(None)
        return self._home

    async def subscribe(self, *channels: Any, callback: Callback) -> None:
        await (await self._classic()).subscribe(*channels, callback=callback)

    async def psubscribe(self, *patterns: Any, callback: Callback) -> None:
        await (await self._classic()).psubscribe(*patterns, callback=callback)

    async def unsubscribe(self, *channels: Any) -> None:
        await (await self._classic()).unsubscribe(*channels)

    async def punsubscribe(self, *patterns: Any) -> None:
        await (await self._classic()).punsubscribe(*patterns)

    async def close(self) -> None:
        """Stop every subscriber of this object."""
        if self in self.cluster._subscribers:
            self.cluster._subscribers.remove(self)
        subscribers = [*self._shards.values(), *([self._home] if self._home else [])]
        self._shards, self._home, self._where = {}, None, {}
        for ps in subscribers:
            await ps.close()
