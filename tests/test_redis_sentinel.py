"""SentinelPool against a real master, replica and three sentinels: discovery,
replica reads, and failovers (forced, and kill -9 of the master) under 50 callers."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.redis_cluster import RedisSentinels
from tests.redis_server import free_port
from tx_swoole.clients.redis import RedisPool, SentinelPool
from tx_swoole.errors import RedisConnectionError, RedisReplyError, RedisTimeoutError

pytestmark = pytest.mark.integration


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def sentinels(tmp_path):
    servers = RedisSentinels(tmp_path)
    servers.start()
    yield servers
    servers.stop()


@pytest_twisted.async_yield_fixture
async def pools() -> AsyncIterator[Any]:
    made: list[RedisPool] = []

    def make(servers: RedisSentinels, **kwargs: Any) -> RedisPool:
        made.append(SentinelPool(servers.sentinels, "mymaster", **kwargs))
        return made[-1]

    yield make
    for p in made:
        await p.close()


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_discovers_the_master_and_a_replica(sentinels, pools) -> None:
    master = pools(sentinels)
    assert await master.set("k", "v") is True
    assert master.address == f"127.0.0.1:{sentinels.data[0]}"
    replica = pools(sentinels, role="replica")
    await _until_async(lambda: replica.get("k"), b"v", 10)
    assert replica.address == f"127.0.0.1:{sentinels.data[1]}"
    with pytest.raises(RedisReplyError, match="READONLY"):
        await replica.set("k", "w")  # a replica pool does not chase the master


async def _until_async(call, expected: Any, timeout: float) -> None:
    deadline = reactor.seconds() + timeout
    while (await call()) != expected:
        assert reactor.seconds() < deadline, "timed out"
        await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_no_sentinel_named(pools) -> None:
    class Nowhere:
        sentinels = [("127.0.0.1", free_port())]

    p = pools(Nowhere, connect_timeout=1, failover_timeout=0.5)
    with pytest.raises(RedisConnectionError, match="no sentinel named the master of 'mymaster'"):
        await p.get("k")


async def _load(p: RedisPool, stop: list[bool], callers: int = 50) -> dict[str, Any]:
    stats: dict[str, Any] = {"ok": 0, "errors": [], "wrong": 0, "last_ok": 0.0}

    async def caller(n: int) -> None:
        i = 0
        while not stop[0]:
            i += 1
            key, value = f"load:{n}", f"{n}:{i}".encode()
            try:
                await p.set(key, value)
                got = await p.get(key)
            except (RedisConnectionError, RedisTimeoutError, RedisReplyError) as e:
                stats["errors"].append(e)
                await sleep(0.01)
                continue
            if got != value:
                stats["wrong"] += 1
            stats["ok"] += 1
            stats["last_ok"] = reactor.seconds()

    stats["done"] = defer.gatherResults([defer.ensureDeferred(caller(n)) for n in range(callers)])
    return stats


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "kill -9"])
@pytest_twisted.ensureDeferred
async def test_failover_under_load(sentinels, pools, how: str) -> None:
    p = pools(sentinels, size=3, failover_timeout=30)
    stop = [False]
    stats = await _load(p, stop)
    await _until(lambda: stats["ok"] > 2000, 30, "load")
    old, new = sentinels.data
    if how == "kill -9":
        sentinels.kill(old)
    else:
        assert await p.sentinels[0].execute("SENTINEL", "FAILOVER", "mymaster") == b"OK"
    changed_at = reactor.seconds()
    await _until(lambda: p.address == f"127.0.0.1:{new}" and stats["last_ok"] > changed_at, 60,
                 "the pool to move to the promoted replica")  # fmt: skip
    mark = stats["ok"]
    await _until(lambda: stats["ok"] > mark + 2000, 30, "load on the new master")
    stop[0] = True
    await stats["done"]
    assert stats["wrong"] == 0
    errors = Counter(f"{type(e).__name__}: {e}" for e in stats["errors"])
    # Only commands in flight when the old master went away fail: at most one per caller,
    # each a connection error (a READONLY refusal is sent again to the new master).
    print(f"\n{how}: {stats['ok']} answered, {len(stats['errors'])} failed")
    assert len(stats["errors"]) <= 50, errors
    assert all(isinstance(e, RedisConnectionError) for e in stats["errors"]), errors
