"""Typed Redis command methods shared by the pool, a single connection and a pipeline.

Each method builds the command and hands it to ``self._call(args, transform)``; a pool or
connection returns a Deferred of the (transformed) reply, a pipeline queues the command and
returns itself.  Values are bytes in and out unless the client decodes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from zope.interface import Interface
from zope.interface.interface import InterfaceClass, fromMethod

Transform = Callable[[Any], Any] | None
Scan = AsyncIterator[Any]


def _pairs_to_dict(reply: Any) -> Any:
    if isinstance(reply, dict) or reply is None:
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))


def _to_bool(reply: Any) -> bool:
    return bool(reply)


def _ok(reply: Any) -> bool:
    return reply in (b"OK", "OK")


def _scores(reply: Any) -> Any:
    if not reply:
        return reply
    it = iter(reply)
    return [(member, float(score)) for member, score in zip(it, it, strict=True)]


def _float(reply: Any) -> Any:
    return None if reply is None else float(reply)


class RedisCommands:
    """Mixin: typed command methods over ``_call``."""

    __slots__ = ()

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> Any:
        raise NotImplementedError

    def execute(self, *args: Any) -> Any:
        """Run any command."""
        return self._call(args)

    # -- connection -------------------------------------------------------------------------
    def ping(self) -> Any:
        return self._call(("PING",))

    def echo(self, value: Any) -> Any:
        return self._call(("ECHO", value))

    def dbsize(self) -> Any:
        return self._call(("DBSIZE",))

    def flushdb(self) -> Any:
        return self._call(("FLUSHDB",), _ok)

    # -- strings and counters ---------------------------------------------------------------
    def get(self, key: Any) -> Any:
        return self._call(("GET", key))

    def set(self, key: Any, value: Any, ex: Any = None, px: Any = None, nx: bool = False,
            xx: bool = False, get: bool = False) -> Any:  # fmt: skip
        args: list[Any] = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if get:
            args.append("GET")
            return self._call(tuple(args))
        return self._call(tuple(args), _ok)

    def setex(self, key: Any, seconds: int, value: Any) -> Any:
        return self._call(("SETEX", key, seconds, value), _ok)

    def setnx(self, key: Any, value: Any) -> Any:
        return self._call(("SETNX", key, value), _to_bool)

    def mget(self, *keys: Any) -> Any:
        return self._call(("MGET", *keys))

    def mset(self, mapping: Mapping[Any, Any]) -> Any:
        return self._call(("MSET", *[x for kv in mapping.items() for x in kv]), _ok)

    def getdel(self, key: Any) -> Any:
        return self._call(("GETDEL", key))

    def append(self, key: Any, value: Any) -> Any:
        return self._call(("APPEND", key, value))

    def strlen(self, key: Any) -> Any:
        return self._call(("STRLEN", key))

    def incr(self, key: Any, amount: int = 1) -> Any:
        return self._call(("INCRBY", key, amount) if amount != 1 else ("INCR", key))

    def decr(self, key: Any, amount: int = 1) -> Any:
        return self._call(("DECRBY", key, amount) if amount != 1 else ("DECR", key))

    def incrbyfloat(self, key: Any, amount: float) -> Any:
        return self._call(("INCRBYFLOAT", key, amount), _float)

    # -- keys and expiry --------------------------------------------------------------------
    def delete(self, *keys: Any) -> Any:
        return self._call(("DEL", *keys))

    def unlink(self, *keys: Any) -> Any:
        return self._call(("UNLINK", *keys))

    def exists(self, *keys: Any) -> Any:
        return self._call(("EXISTS", *keys))

    def expire(self, key: Any, seconds: int) -> Any:
        return self._call(("EXPIRE", key, seconds), _to_bool)

    def pexpire(self, key: Any, ms: int) -> Any:
        return self._call(("PEXPIRE", key, ms), _to_bool)

    def expireat(self, key: Any, when: int) -> Any:
        return self._call(("EXPIREAT", key, when), _to_bool)

    def ttl(self, key: Any) -> Any:
        return self._call(("TTL", key))

    def pttl(self, key: Any) -> Any:
        return self._call(("PTTL", key))

    def persist(self, key: Any) -> Any:
        return self._call(("PERSIST", key), _to_bool)

    def type(self, key: Any) -> Any:
        return self._call(("TYPE", key))

    def rename(self, src: Any, dst: Any) -> Any:
        return self._call(("RENAME", src, dst), _ok)

    def keys(self, pattern: Any = "*") -> Any:
        return self._call(("KEYS", pattern))

    # -- hashes -----------------------------------------------------------------------------
    def hget(self, key: Any, field: Any) -> Any:
        return self._call(("HGET", key, field))

    def hset(self, key: Any, field: Any = None, value: Any = None,
             mapping: Mapping[Any, Any] | None = None) -> Any:  # fmt: skip
        items: list[Any] = [] if field is None else [field, value]
        for kv in (mapping or {}).items():
            items.extend(kv)
        return self._call(("HSET", key, *items))

    def hmget(self, key: Any, *fields: Any) -> Any:
        return self._call(("HMGET", key, *fields))

    def hgetall(self, key: Any) -> Any:
        return self._call(("HGETALL", key), _pairs_to_dict)

    def hdel(self, key: Any, *fields: Any) -> Any:
        return self._call(("HDEL", key, *fields))

    def hexists(self, key: Any, field: Any) -> Any:
        return self._call(("HEXISTS", key, field), _to_bool)

    def hincrby(self, key: Any, field: Any, amount: int = 1) -> Any:
        return self._call(("HINCRBY", key, field, amount))

    def hkeys(self, key: Any) -> Any:
        return self._call(("HKEYS", key))

    def hvals(self, key: Any) -> Any:
        return self._call(("HVALS", key))

    def hlen(self, key: Any) -> Any:
        return self._call(("HLEN", key))

    # -- lists ------------------------------------------------------------------------------
    def lpush(self, key: Any, *values: Any) -> Any:
        return self._call(("LPUSH", key, *values))

    def rpush(self, key: Any, *values: Any) -> Any:
        return self._call(("RPUSH", key, *values))

    def lpop(self, key: Any, count: int | None = None) -> Any:
        return self._call(("LPOP", key) if count is None else ("LPOP", key, count))

    def rpop(self, key: Any, count: int | None = None) -> Any:
        return self._call(("RPOP", key) if count is None else ("RPOP", key, count))

    def lrange(self, key: Any, start: int = 0, stop: int = -1) -> Any:
        return self._call(("LRANGE", key, start, stop))

    def llen(self, key: Any) -> Any:
        return self._call(("LLEN", key))

    def lindex(self, key: Any, index: int) -> Any:
        return self._call(("LINDEX", key, index))

    def ltrim(self, key: Any, start: int, stop: int) -> Any:
        return self._call(("LTRIM", key, start, stop), _ok)

    def lrem(self, key: Any, count: int, value: Any) -> Any:
        return self._call(("LREM", key, count, value))

    # -- sets -------------------------------------------------------------------------------
    def sadd(self, key: Any, *members: Any) -> Any:
        return self._call(("SADD", key, *members))

    def srem(self, key: Any, *members: Any) -> Any:
        return self._call(("SREM", key, *members))

    def smembers(self, key: Any) -> Any:
        return self._call(("SMEMBERS", key), set)

    def sismember(self, key: Any, member: Any) -> Any:
        return self._call(("SISMEMBER", key, member), _to_bool)

    def scard(self, key: Any) -> Any:
        return self._call(("SCARD", key))

    # -- sorted sets ------------------------------------------------------------------------
    def zadd(
        self, key: Any, mapping: Mapping[Any, float], nx: bool = False, xx: bool = False
    ) -> Any:
        flags = (["NX"] if nx else []) + (["XX"] if xx else [])
        items = [x for member, score in mapping.items() for x in (score, member)]
        return self._call(("ZADD", key, *flags, *items))

    def zrem(self, key: Any, *members: Any) -> Any:
        return self._call(("ZREM", key, *members))

    def zscore(self, key: Any, member: Any) -> Any:
        return self._call(("ZSCORE", key, member), _float)

    def zincrby(self, key: Any, amount: float, member: Any) -> Any:
        return self._call(("ZINCRBY", key, amount, member), _float)

    def zcard(self, key: Any) -> Any:
        return self._call(("ZCARD", key))

    def zrank(self, key: Any, member: Any) -> Any:
        return self._call(("ZRANK", key, member))

    def zrange(self, key: Any, start: int = 0, stop: int = -1, withscores: bool = False) -> Any:
        if withscores:
            return self._call(("ZRANGE", key, start, stop, "WITHSCORES"), _scores)
        return self._call(("ZRANGE", key, start, stop))

    def zrangebyscore(self, key: Any, min: Any, max: Any, withscores: bool = False) -> Any:
        if withscores:
            return self._call(("ZRANGEBYSCORE", key, min, max, "WITHSCORES"), _scores)
        return self._call(("ZRANGEBYSCORE", key, min, max))

    # -- pub/sub, scripting, streams ---------------------------------------------------------
    def publish(self, channel: Any, message: Any) -> Any:
        return self._call(("PUBLISH", channel, message))

    def eval(self, script: Any, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:
        keys = list(keys)
        return self._call(("EVAL", script, len(keys), *keys, *args))

    def evalsha(self, sha: Any, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:
        keys = list(keys)
        return self._call(("EVALSHA", sha, len(keys), *keys, *args))

    def script_load(self, script: Any) -> Any:
        return self._call(("SCRIPT", "LOAD", script))

    def xadd(self, key: Any, fields: Mapping[Any, Any], id: Any = "*",
             maxlen: int | None = None) -> Any:  # fmt: skip
        trim = ["MAXLEN", "~", maxlen] if maxlen is not None else []
        return self._call(("XADD", key, *trim, id, *[x for kv in fields.items() for x in kv]))

    def xlen(self, key: Any) -> Any:
        return self._call(("XLEN", key))

    def xrange(self, key: Any, start: Any = "-", end: Any = "+", count: int | None = None) -> Any:
        extra = ["COUNT", count] if count is not None else []
        return self._call(("XRANGE", key, start, end, *extra), _stream_entries)

    def xdel(self, key: Any, *ids: Any) -> Any:
        return self._call(("XDEL", key, *ids))

    def xtrim(self, key: Any, maxlen: int) -> Any:
        return self._call(("XTRIM", key, "MAXLEN", maxlen))


def _stream_entries(reply: Any) -> Any:
    if reply is None:
        return reply
    return [(entry_id, _pairs_to_dict(fields)) for entry_id, fields in reply]


def stream_read_reply(reply: Any) -> Any:
    """XREAD's reply as ``{stream: [(id, {field: value}), ...]}`` (None when it timed out)."""
    if reply is None:
        return None
    if isinstance(reply, dict):
        return {k: _stream_entries(v) for k, v in reply.items()}
    return {stream: _stream_entries(entries) for stream, entries in reply}


def _surface(cls: type) -> dict[str, Any]:
    """The public command methods of ``cls`` as interface methods (signatures and docs
    taken from the implementation: one source for the surface)."""
    attrs: dict[str, Any] = {}
    for name, func in vars(cls).items():
        if not name.startswith("_") and inspect.isfunction(func):
            method = fromMethod(func, name=name)
            method.__doc__ = func.__doc__ or f"Redis {name.upper()}."
            attrs[name] = method
    return attrs


if TYPE_CHECKING:

    class IRedisCommands(Interface):  # what type checkers see; at run time, the whole surface
        """The Redis command surface: a pool, a connection and a pipeline all provide it.

        Type against it, and fake it in tests of code that uses Redis.
        """

        def execute(*args: Any) -> Any:  # noqa: N805
            """Run any command (``execute("SET", "k", "v")``); errors come back as
            ``RedisReplyError``."""

        def get(key: Any) -> Any:  # noqa: N805
            """GET key."""

        def set(key: Any, value: Any, ex: Any = None, px: Any = None) -> Any:  # noqa: N805
            """SET key value [EX s|PX ms] (plus nx, xx, get keywords)."""

        def eval(script: Any, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:  # noqa: N805
            """EVAL script numkeys keys... args..."""

        def evalsha(sha: Any, keys: Iterable[Any] = (), args: Iterable[Any] = ()) -> Any:  # noqa: N805
            """EVALSHA sha numkeys keys... args..."""

else:
    IRedisCommands = InterfaceClass(
        "IRedisCommands",
        (Interface,),
        _surface(RedisCommands),
        __doc__="""The Redis command surface: a pool, a connection and a pipeline all provide
        it.  Every command method of :class:`RedisCommands` is declared, so a fake can be
        verified against it (``zope.interface.verify.verifyObject``).  Type against it, and
        fake it in tests of code that uses Redis.""",
        __module__=__name__,
    )


class ScanCommands:
    """The SCAN family as async iterators (pool and connection; not pipelines)."""

    __slots__ = ()

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> Any:
        raise NotImplementedError

    async def _scan(self, verb: str, key: tuple[Any, ...], match: Any, count: int | None,
                    pairs: bool) -> AsyncIterator[Any]:  # fmt: skip
        cursor: Any = 0
        while True:
            args: list[Any] = [verb, *key, cursor]
            if match is not None:
                args += ["MATCH", match]
            if count is not None:
                args += ["COUNT", count]
            cursor, items = await self._call(tuple(args))
            if pairs:
                it = iter(items)
                for item in zip(it, it, strict=True):
                    yield item
            else:
                for item in items:
                    yield item
            if int(cursor) == 0:
                return

    def scan_iter(self, match: Any = None, count: int | None = None) -> AsyncIterator[Any]:
        """Every key (matching ``match``), with SCAN: ``async for key in pool.scan_iter()``."""
        return self._scan("SCAN", (), match, count, False)

    def sscan_iter(
        self, key: Any, match: Any = None, count: int | None = None
    ) -> AsyncIterator[Any]:
        return self._scan("SSCAN", (key,), match, count, False)

    def hscan_iter(
        self, key: Any, match: Any = None, count: int | None = None
    ) -> AsyncIterator[Any]:
        """``(field, value)`` pairs of a hash."""
        return self._scan("HSCAN", (key,), match, count, True)

    def zscan_iter(
        self, key: Any, match: Any = None, count: int | None = None
    ) -> AsyncIterator[Any]:
        """``(member, score)`` pairs of a sorted set (score as bytes/str, as sent)."""
        return self._scan("ZSCAN", (key,), match, count, True)
