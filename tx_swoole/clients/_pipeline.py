"""Explicit pipelines and Lua scripts of :class:`~tx_swoole.clients.redis.RedisPool`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from tx_swoole.clients._commands import IRedisCommands, RedisCommands, Transform
from tx_swoole.clients._connection import IRedisConnector
from tx_swoole.errors import RedisReplyError


@implementer(IRedisCommands)
class Pipeline(RedisCommands):
    """Commands queued with the usual methods, sent in one write by ``await execute()``."""

    def __init__(self, pool: IRedisConnector) -> None:
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
        conn = await self.pool.shared_connection()
        results: list[Any] = await conn.send_many(commands)
        return results

    def __len__(self) -> int:
        return len(self.commands)


class Script:
    """A Lua script: ``await script(keys=[...], args=[...])`` runs EVALSHA, or EVAL when the
    server does not have it cached (NOSCRIPT) — which also caches it."""

    def __init__(self, client: IRedisCommands, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:
        keys, args = list(keys), list(args)
        try:
            return await self.client.evalsha(self.sha, keys, args)
        except RedisReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.client.eval(self.source, keys, args)
