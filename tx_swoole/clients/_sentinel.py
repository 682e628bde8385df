"""Redis Sentinel: a pool whose server is whichever one the sentinels name.

``SentinelPool([(host, port), ...], "mymaster")`` asks the sentinels (the first that
answers; it moves to the front) for the master of the service, checks with ``ROLE`` that the
server really is one, and connects to it with the pool's usual behaviour.
``role="replica"`` connects to one of the service's replicas instead (read scaling).

It asks again:
- when a sentinel announces ``+switch-master`` (every sentinel is subscribed to): the pool
  moves to the new master at once, closing its connections to the old one;
- when a connect fails or the server is no longer in its role (``ROLE``, or a ``READONLY``
  reply to a write: that command did not run, so it is sent again to the new master).

While no master is reachable, commands wait for one (the sentinels are asked every
``FAILOVER_POLL`` s) up to ``failover_timeout``; commands that were in flight on a connection
that died fail with :class:`~tx_swoole.errors.RedisConnectionError` (they may have run).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, task

from tx_swoole._log import SwooleLogger
from tx_swoole.clients._commands import Transform
from tx_swoole.clients._connection import RedisConnection
from tx_swoole.clients._pool import RedisPool
from tx_swoole.clients._pubsub import PubSub
from tx_swoole.clients._resp import pack_command
from tx_swoole.errors import RedisConnectionError, RedisReplyError, RedisTimeoutError

__all__ = ["SentinelPool"]
log = SwooleLogger("tx_swoole.redis.sentinel")
FAILOVER_POLL = 0.25
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SentinelPool(RedisPool):
    """A :class:`~tx_swoole.clients.redis.RedisPool` on the server the sentinels name; see the
    module docstring.  ``sentinel_password`` authenticates to the sentinels themselves."""

    def __init__(
        self,
        sentinels: Iterable[tuple[str, int]],
        service_name: str,
        *,
        role: str = "master",
        failover_timeout: float = 20.0,
        sentinel_password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if role not in ("master", "replica"):
            raise ValueError(f"role={role!r}: 'master' or 'replica'")
        super().__init__("", 0, **kwargs)
        self.serviceName = service_name
        self.role = role
        self.failoverTimeout = failover_timeout
        self.address = f"{role} of {service_name!r} (not yet asked)"
        options = {k: kwargs[k] for k in ("connect_timeout", "command_timeout", "tls", "reactor")
                   if k in kwargs}  # fmt: skip
        self.sentinels = [RedisPool(h, int(p), size=1, password=sentinel_password, **options)
                          for h, p in sentinels]  # fmt: skip
        if not self.sentinels:
            raise ValueError("from_sentinel needs at least one sentinel address")
        self._known = False
        self._watchers: list[PubSub] = []

    # -- asking the sentinels ---------------------------------------------------------------------
    async def discover(self) -> tuple[str, int]:
        """Ask the sentinels where the service's master (or a replica) is; → (host, port)."""
        errors = []
        for sentinel in list(self.sentinels):
            try:
                where = await self._ask(sentinel)
            except (*_UNREACHABLE, RedisReplyError) as e:
                errors.append(str(e))
                continue
            if where is None:
                errors.append(f"{sentinel.address}: no {self.role} known for "
                              f"{self.serviceName!r}")  # fmt: skip
                continue
            self.sentinels.remove(sentinel)
            self.sentinels.insert(0, sentinel)  # it answered: ask it first next time
            self._moveTo(*where)
            self._watch()
            return where
        raise RedisConnectionError(f"no sentinel named the {self.role} of {self.serviceName!r}: "
                                   + "; ".join(errors))  # fmt: skip

    async def _ask(self, sentinel: RedisPool) -> tuple[str, int] | None:
        if self.role == "master":
            reply = await sentinel.execute("SENTINEL", "get-master-addr-by-name", self.serviceName)
            return None if not reply else (_text(reply[0]), int(reply[1]))
        replicas = await sentinel.execute("SENTINEL", "replicas", self.serviceName)
        healthy = []
        for entry in replicas or []:
            info = dict(zip(map(_text, entry[0::2]), map(_text, entry[1::2]), strict=True))
            if not {"s_down", "o_down", "disconnected"} & set(info.get("flags", "").split(",")):
                healthy.append((info["ip"], int(info["port"])))
        return random.choice(healthy) if healthy else None

    def _moveTo(self, host: str, port: int) -> None:
        """Point the pool at (host, port); connections to another server are closed."""
        if self._known and (host, port) == (self.host, self.port):
            return
        old = self.address
        self.host, self.port, self._known = host, port, True
        self.address = f"{host}:{port}"
        self._retryAt, self._lastError, self._failures = 0.0, None, 0  # a new server: no back-off
        if self.connections:
            log.info("{role} of {name!r} moved from {old} to {new}: closing {n} connections",
                     role=self.role, name=self.serviceName, old=old, new=self.address,
                     n=len(self.connections))  # fmt: skip
        for conn in list(self.connections):
            conn.abort(RedisConnectionError(f"{old}: the {self.role} of {self.serviceName!r} "
                                            f"moved to {self.address}"))  # fmt: skip

    def _watch(self) -> None:
        """Subscribe to +switch-master on every sentinel (once)."""
        if self._watchers or self.role != "master":
            return
        for sentinel in self.sentinels:
            ps = sentinel.pubsub()
            self._watchers.append(ps)
            d = defer.ensureDeferred(ps.subscribe("+switch-master", callback=self._switched))
            d.addErrback(self._watchFailed, sentinel)

    def _watchFailed(self, f: Any, sentinel: RedisPool) -> None:
        log.warn("cannot watch sentinel {address} for +switch-master: {e}",
                 address=sentinel.address, e=f.getErrorMessage())  # fmt: skip

    def _switched(self, channel: Any, message: Any) -> None:
        fields = _text(message).split()
        if len(fields) == 5 and fields[0] == self.serviceName:
            self._moveTo(fields[3], int(fields[4]))

    # -- connecting and the command path --------------------------------------------------------
    async def _connect(self) -> RedisConnection:
        if not self._known:
            await self.discover()
        conn = await super()._connect()
        try:
            role = _text((await conn.execute("ROLE"))[0])
        except BaseException:
            conn.abort(RedisConnectionError(f"{self.address}: ROLE failed"))
            raise
        if role != ("master" if self.role == "master" else "slave"):
            conn.abort(RedisConnectionError(f"{self.address}: not a {self.role}"))
            self._known = False  # the next connect asks the sentinels first
            raise RedisConnectionError(
                f"{self.address} is a {role}, not the {self.role} of "
                f"{self.serviceName!r}; asking the sentinels again"
            )
        return conn

    def call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        d = RedisPool.call(self, args, transform)
        d.addErrback(self._failed, args, transform)
        return d

    _call = call

    def _failed(self, f: Any, args: tuple[Any, ...], transform: Transform) -> Any:
        e = f.value
        if (
            self.role == "master"
            and isinstance(e, RedisReplyError)
            and str(e).startswith("READONLY")
        ):
            # Refused by a demoted master: it did not run; send it to the new one.
            self._known = False
            for conn in list(self.connections):
                conn.abort(RedisConnectionError(f"{self.address}: no longer the master"))
            return defer.ensureDeferred(self._callSlow(args, transform))
        if isinstance(e, _UNREACHABLE):
            self._known = False
        return f

    async def _callSlow(self, args: tuple[Any, ...], transform: Transform) -> Any:
        deadline = self.reactor.seconds() + self.failoverTimeout
        while True:
            try:
                conn = await self.shared_connection()
            except _UNREACHABLE:  # nothing was sent: wait for the sentinels to name a server
                if self.reactor.seconds() >= deadline:
                    raise
                await task.deferLater(self.reactor, FAILOVER_POLL)
                self._known = False
                continue
            return await conn.send(pack_command(args), transform)

    async def close(self) -> None:
        for ps in self._watchers:
            await ps.close()
        self._watchers = []
        await super().close()
        for sentinel in self.sentinels:
            await sentinel.close()
