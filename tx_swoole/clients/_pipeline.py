"""Explicit pipelines and Lua scripts of :class:`~tx_swoole.clients.redis.RedisPool`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from zope.interface import implementer

from tx_swoole.clients._commands import IRedisCommands, RedisCommands, Transform
from tx_swoole.errors import RedisError, RedisReplyError

if TYPE_CHECKING:
    from tx_swoole.clients.redis import RedisPool


class _Collector:
    """Gathers the replies of one pipeline, errors in place; fires once, with the list."""

    __slots__ = ("results", "remaining", "deferred", "address")
    called = False  # read by dataReceived, like Deferred.called; a collector drops its own

    def __init__(self, count: int, address: str) -> None:
        self.results: list[Any] = []
        self.remaining = count
        self.address = address
        self.deferred: defer.Deferred[Any] = defer.Deferred(self._cancel)

    def _cancel(self, d: defer.Deferred[Any]) -> None:
        self.remaining = -1  # replies still arrive in order and are dropped

    def add(self, reply: Any, transform: Transform) -> None:
        if self.remaining < 0:
            return
        if reply.__class__ is RedisReplyError:
            reply = RedisReplyError(f"{reply} ({self.address})")
        elif transform is not None:
            try:
                reply = transform(reply)
            except Exception as e:
                reply = e
        self.results.append(reply)
        self.remaining -= 1
        if self.remaining == 0:
            self.deferred.callback(self.results)

    def fail(self, reason: RedisError) -> None:
        if self.remaining > 0:
            self.remaining = -1
            self.deferred.errback(reason)


@implementer(IRedisCommands)
class Pipeline(RedisCommands):
    """Commands queued with the usual methods, sent in one write by ``await execute()``."""

    def __init__(self, pool: RedisPool) -> None:
        self.pool = pool
        self.commands: list[tuple[tuple[Any, ...], Transform]] = []

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> Pipeline:
        self.commands.append((args, transform))
        return self

    def execute(self, *args: Any) -> Any:
        """With arguments, queue that command; without, send the batch → Deferred[list]."""
        if args:
            return self._call(args)
        commands, self.commands = self.commands, []
        return defer.ensureDeferred(self._run(commands))

    async def _run(self, commands: list[tuple[tuple[Any, ...], Transform]]) -> list[Any]:
        if not commands:
            return []
        problem = self.pool._check()
        if problem is not None:
            raise problem
        conn = await self.pool._sharedConnection()
        results: list[Any] = await conn.send_many(commands)
        return results

    def __len__(self) -> int:
        return len(self.commands)


class Script:
    """A Lua script: ``await script(keys=[...], args=[...])`` runs EVALSHA, or EVAL when the
    server does not have it cached (NOSCRIPT) — which also caches it."""

    def __init__(self, pool: RedisPool, source: str) -> None:
        import hashlib

        self.pool = pool
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:
        keys, args = list(keys), list(args)
        try:
            return await self.pool.evalsha(self.sha, keys, args)
        except RedisReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.pool.eval(self.source, keys, args)
