"""Redis pub/sub on a dedicated connection that resubscribes after every reconnect.

``ps = pool.pubsub()``; ``await ps.subscribe("news", callback=on_message)`` where
``on_message(channel, message)``; ``await ps.psubscribe("news.*", callback=...)`` for
patterns; ``await ps.unsubscribe("news")``; ``await ps.close()``.

Resource handling: one connection per PubSub, kept by Twisted's ``ClientService`` (reconnects
with jittered backoff); ``close()`` stops it.  Error handling: a callback that raises is logged
with its traceback and the others keep receiving; while disconnected, ``subscribe`` waits for
the connection (up to the pool's ``connect_timeout``) and then raises ``RedisConnectionError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.protocol import Factory

from tx_swoole._log import SwooleLogger
from tx_swoole.clients._connection import IRedisConnector, RedisConnection
from tx_swoole.clients._resp import pack_command
from tx_swoole.clients._slots import key_slot
from tx_swoole.errors import RedisConnectionError, RedisReplyError

log = SwooleLogger("tx_swoole.redis.pubsub")
Callback = Callable[[Any, Any], Any]
_PUSH = {b"message", b"pmessage", b"smessage", "message", "pmessage", "smessage"}


class PubSubConnection(RedisConnection):
    """A connection in subscribed mode: pushes go to callbacks, confirmations to the FIFO."""

    pubsub: PubSub

    def connectionMade(self) -> None:
        super().connectionMade()
        self.pubsub._connected(self)

    def dataReceived(self, data: bytes) -> None:
        for reply in self.parse(data):
            if isinstance(reply, list) and reply and reply[0] in _PUSH:
                self.pubsub._dispatch(reply)
                continue
            if not self.pending:
                continue  # a confirmation nobody waits for (resubscribe after reconnect)
            d, _, _ = self.pending.popleft()
            if d is None:
                continue
            if isinstance(reply, RedisReplyError):
                d.errback(RedisReplyError(f"{reply} ({self.address})"))
            else:
                d.callback(reply)


class PubSub:
    """Subscriptions of one subscriber; see the module docstring.

    ``sharded``: the channels are a cluster node's shard channels (``SSUBSCRIBE``; the caller
    gives channels of one slot per call, as Redis requires).
    """

    def __init__(self, pool: IRedisConnector, sharded: bool = False) -> None:
        self.pool = pool
        self.sharded = sharded
        self._subscribe, self._unsubscribe = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self.channels: dict[Any, Callback] = {}
        self.patterns: dict[Any, Callback] = {}
        self.connection: PubSubConnection | None = None
        self._service: ClientService | None = None

    def start(self) -> ClientService:
        """Start connecting (subscriptions already recorded are sent once connected)."""
        if self._service is None:
            pool = self.pool

            def build() -> PubSubConnection:
                conn = PubSubConnection(pool.address, pool.encoding, pool.reactor, 0)
                conn.pubsub = self
                return conn

            self._service = ClientService(
                pool.endpoint(), Factory.forProtocol(build),
                retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=10.0), clock=pool.reactor,
            )  # fmt: skip
            self._service.startService()
        return self._service

    def _connected(self, conn: PubSubConnection) -> None:
        self.connection = conn
        conn.lost.addCallback(lambda _: self._lost(conn))
        data = b""
        auth = self.pool.auth_command()
        if auth is not None:
            data += pack_command(auth)
        if self.channels and self.sharded:
            for group in _by_slot(self.channels):
                data += pack_command(("SSUBSCRIBE", *group))
        elif self.channels:
            data += pack_command(("SUBSCRIBE", *self.channels))
        if self.patterns:
            data += pack_command(("PSUBSCRIBE", *self.patterns))
        if data:
            log.info("pub/sub connection to {address} (re)established: resubscribing "
                     "{n} channels, {m} patterns", address=self.pool.address,
                     n=len(self.channels), m=len(self.patterns))  # fmt: skip
            transport: Any = conn.transport
            transport.write(data)

    def _lost(self, conn: PubSubConnection) -> None:
        if self.connection is conn:
            self.connection = None

    async def _conn(self) -> PubSubConnection:
        service = self.start()
        timeout = self.pool.connectTimeout or 30.0
        d = service.whenConnected(failAfterFailures=None)
        d.addTimeout(timeout, self.pool.reactor)
        try:
            conn: Any = await d
        except defer.TimeoutError:
            raise RedisConnectionError(
                f"pub/sub connection to {self.pool.address} not established within {timeout}s"
            ) from None
        assert isinstance(conn, PubSubConnection)
        return conn

    async def _command(self, verb: str, names: tuple[Any, ...]) -> None:
        conn = await self._conn()
        await conn.send(pack_command((verb, *names)), count=max(len(names), 1))

    async def subscribe(self, *channels: Any, callback: Callback) -> None:
        """Subscribe to ``channels``; ``callback(channel, message)`` gets each message."""
        for c in channels:
            self.channels[self._key(c)] = callback
        await self._command(self._subscribe, channels)

    async def psubscribe(self, *patterns: Any, callback: Callback) -> None:
        """Subscribe to glob ``patterns``; ``callback(channel, message)`` gets each message."""
        for p in patterns:
            self.patterns[self._key(p)] = callback
        await self._command("PSUBSCRIBE", patterns)

    async def unsubscribe(self, *channels: Any) -> None:
        for c in channels:
            self.channels.pop(self._key(c), None)
        await self._command(self._unsubscribe, channels)

    def drop(self, *channels: Any) -> None:
        """Stop delivering ``channels`` here at once; the server is told when connected (a
        cluster moving shard channels to the node that now serves their slot)."""
        for c in channels:
            self.channels.pop(self._key(c), None)
        conn = self.connection
        if conn is not None and conn.closedReason is None and channels:
            for group in _by_slot(channels) if self.sharded else [list(channels)]:
                d = conn.send(pack_command((self._unsubscribe, *group)), count=len(group))
                d.addErrback(lambda f: None)

    async def punsubscribe(self, *patterns: Any) -> None:
        for p in patterns:
            self.patterns.pop(self._key(p), None)
        await self._command("PUNSUBSCRIBE", patterns)

    def _key(self, name: Any) -> Any:
        if self.pool.encoding:
            return name.decode(self.pool.encoding) if isinstance(name, bytes) else name
        return name.encode() if isinstance(name, str) else name

    def _dispatch(self, reply: list[Any]) -> None:
        if reply[0] in (b"message", "message", b"smessage", "smessage"):
            callback, channel, message = self.channels.get(reply[1]), reply[1], reply[2]
        else:
            callback, channel, message = self.patterns.get(reply[1]), reply[2], reply[3]
        if callback is None:
            return
        try:
            result = callback(channel, message)
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                defer.ensureDeferred(result).addErrback(
                    lambda f: log.failure("pub/sub callback failed", f)
                )
        except Exception:
            log.failure("pub/sub callback for {channel!r} failed", channel=channel)

    async def close(self) -> None:
        """Stop the subscriber and its connection."""
        if self._service is not None:
            await self._service.stopService()
            self._service = None


def _by_slot(channels: Any) -> list[list[Any]]:
    """Shard channels grouped by cluster slot (one SSUBSCRIBE may not span slots)."""
    groups: dict[int, list[Any]] = {}
    for c in channels:
        groups.setdefault(key_slot(c), []).append(c)
    return list(groups.values())
