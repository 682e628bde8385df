"""RedisCluster: slot logic on its own, then a real 3-primary, 3-replica cluster: routing,
MOVED and ASK, pipelines, replica reads, sharded pub/sub, and failovers under 50 callers."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.redis_cluster import RedisClusterServers
from tx_swoole.clients import _slots
from tx_swoole.clients.redis import RedisCluster
from tx_swoole.errors import (
    RedisClusterError,
    RedisConnectionError,
    RedisCrossSlotError,
    RedisReplyError,
    RedisTimeoutError,
)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


# -- slot logic, no server -----------------------------------------------------------------------
def test_key_slots_match_redis() -> None:
    """The vectors of the cluster spec: CRC16 XMODEM of the key or its hash tag, mod 16384."""
    assert _slots.key_slot(b"123456789") == 0x31C3
    assert _slots.key_slot("foo") == 12182
    assert _slots.key_slot("{user1000}.following") == _slots.key_slot("{user1000}.followers")
    assert _slots.key_slot("{user1000}.following") == _slots.key_slot("user1000")
    assert _slots.key_slot("foo{}{bar}") == _slots.key_slot(b"foo{}{bar}")  # empty tag: all
    assert _slots.key_slot("foo{{bar}}zap") == _slots.key_slot("{bar")
    assert _slots.key_slot(42) == _slots.key_slot("42")


def test_keys_of_commands() -> None:
    keys = _slots.command_keys
    spec = _slots.spec_for
    assert keys(("GET", "a"), spec("GET")) == ("a",)
    assert keys(("MSET", "a", 1, "b", 2), spec("MSET")) == ("a", "b")
    assert keys(("BLPOP", "a", "b", 0), spec("BLPOP")) == ("a", "b")
    assert keys(("EVAL", "return 1", 2, "k1", "k2", "x"), spec("EVAL")) == ("k1", "k2")
    assert keys(("ZUNION", 2, "z1", "z2", "WITHSCORES"), spec("ZUNION")) == ("z1", "z2")
    assert keys(("ZUNIONSTORE", "d", 2, "z1", "z2"), spec("ZUNIONSTORE")) == ["d", "z1", "z2"]
    streams = ("XREAD", "COUNT", 2, "STREAMS", "s1", "s2", "0", "0")
    assert keys(streams, spec("XREAD")) == ("s1", "s2")
    assert keys(("PING",), spec("PING")) == ()
    assert _slots.command_name((b"get", "k")) == "GET"
    # A command read from COMMAND INFO: (first, last, step), or None for movable keys.
    info = [[b"getex", -2, [b"write"], 1, 1, 1]]
    assert _slots.spec_from_command_info(info) == (1, 1, 1)
    assert _slots.spec_from_command_info([[b"x", -2, [b"movablekeys"], 0, 0, 0]]) is None
    assert _slots.spec_from_command_info([[b"blpop", -3, [b"write"], 1, -2, 1]]) == (1, -2, 1)


def test_cross_slot_refused_with_advice() -> None:
    with pytest.raises(RedisCrossSlotError) as e:
        _slots.command_slot("MGET", ["a", "b"])
    message = str(e.value)
    assert "MGET" in message and "different slots" in message and "hash tag" in message
    assert isinstance(e.value, ValueError)
    assert _slots.command_slot("MGET", ["{t}a", "{t}b"]) == _slots.key_slot("t")


def test_redirects_parsed() -> None:
    r = _slots.parse_redirect("MOVED 3999 127.0.0.1:6381 (127.0.0.1:7000)", "127.0.0.1:7000")
    assert r == ("MOVED", 3999, ("127.0.0.1", 6381))
    assert _slots.parse_redirect("ASK 1 :7001", "10.0.0.2:7000") == ("ASK", 1, ("10.0.0.2", 7001))
    assert _slots.parse_redirect("ERR wrong", "h:1") is None
    assert _slots.parse_redirect("MOVED x y", "h:1") is None


def test_topology_from_shards_and_slots() -> None:
    def node(port: int, role: str, health: str = "online") -> list[Any]:
        return [b"id", b"x", b"port", port, b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1",
                b"role", role.encode(), b"health", health.encode()]  # fmt: skip

    shards = [
        [b"slots", [0, 8000], b"nodes", [node(7000, "master"), node(7003, "replica")]],
        [b"slots", [8001, 16383], b"nodes", [node(7001, "master", "failed"),
                                             node(7004, "replica", "loading")]],
    ]  # fmt: skip
    t = _slots.parse_shards(shards, "127.0.0.1")
    assert t.slots[0] == t.slots[8000] == ("127.0.0.1", 7000)
    assert t.slots[8001] == t.slots[16383] == ("127.0.0.1", 7001)
    assert t.replicas == {("127.0.0.1", 7000): [("127.0.0.1", 7003)], ("127.0.0.1", 7001): []}
    assert t.failed == {("127.0.0.1", 7001)}
    slots = [[0, 8000, [b"", 7000, b"id"], [b"127.0.0.1", 7003, b"id"]],
             [8001, 16383, [b"127.0.0.1", 7001, b"id"]]]  # fmt: skip
    t = _slots.parse_slots(slots, "10.0.0.5")
    assert t.slots[0] == ("10.0.0.5", 7000) and t.slots[9000] == ("127.0.0.1", 7001)
    with pytest.raises(RedisClusterError, match="no primary"):
        _slots.parse_slots([], "h")


# -- a real cluster ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory):
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of the test's own, to fail over and kill."""
    servers = RedisClusterServers(tmp_path)
    servers.start()
    yield servers
    servers.stop()


@pytest_twisted.async_yield_fixture
async def clusters() -> AsyncIterator[Any]:
    made: list[RedisCluster] = []

    def make(servers: RedisClusterServers, **kwargs: Any) -> RedisCluster:
        made.append(RedisCluster(servers.nodes[:2], **kwargs))
        return made[-1]

    yield make
    for c in made:
        await c.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_commands_routed_to_every_primary(shared_cluster, clusters) -> None:
    c = clusters(shared_cluster, size=2)
    await c.flushdb()
    keys = [f"key:{i}" for i in range(300)]
    await defer.gatherResults([c.set(k, k) for k in keys])
    assert await defer.gatherResults([c.get(k) for k in keys]) == [k.encode() for k in keys]
    assert await c.dbsize() == 300  # summed over the three primaries
    per_node = [await p.dbsize() for p in c.primaries()]
    assert len(per_node) == 3 and all(n > 50 for n in per_node) and sum(per_node) == 300
    assert sorted(await c.keys("key:*")) == sorted(k.encode() for k in keys)
    assert sorted([k async for k in c.scan_iter(match="key:*", count=50)]) == sorted(
        k.encode() for k in keys
    )
    # Hash tags keep multi-key commands in one slot; without them they are refused locally.
    assert await c.mset({"{u1}:a": 1, "{u1}:b": 2}) is True
    assert await c.mget("{u1}:a", "{u1}:b") == [b"1", b"2"]
    assert await c.delete("{u1}:a", "{u1}:b") == 2
    with pytest.raises(RedisCrossSlotError):
        await c.mget("key:1", "key:2")
    # Commands not in the table are looked up with COMMAND INFO; errors stay errors.
    assert await c.execute("getex", "key:7") == b"key:7"
    await c.lpush("list", "x")
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        await c.get("list")
    assert await c.execute("PING") == b"PONG"
    script = c.register_script("return redis.call('GET', KEYS[1])")
    assert await script(keys=["key:9"]) == b"key:9"
    assert await c.transaction(lambda conn: defer.succeed([("INCR", "{t}n"), ("INCR", "{t}n")]),
                               "{t}n") == [1, 2]  # fmt: skip
    assert await c.blpop(["list"], timeout=1) == [b"list", b"x"]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_pipeline_split_by_node_answers_in_order(shared_cluster, clusters) -> None:
    c = clusters(shared_cluster, encoding="utf-8")
    p = c.pipeline()
    for i in range(200):
        p.set(f"p:{i}", i)
    p.mget("p:1", "p:2")  # keys in two slots: refused in place
    for i in range(200):
        p.get(f"p:{i}")
    p.dbsize()  # fan-out: sent on its own
    results = await p.execute()
    assert results[:200] == [True] * 200
    assert isinstance(results[200], RedisCrossSlotError)
    assert results[201:401] == [str(i) for i in range(200)]
    assert results[401] >= 200


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_moved_updates_the_map(shared_cluster, clusters) -> None:
    """A stale map (every slot pointing at one primary) heals from the servers' MOVED."""
    c = clusters(shared_cluster)
    await c.ready()
    await c.set("foo", "bar")
    right = c.node_for("foo")
    wrong = next(p for p in c.primaries() if p is not right)
    c._slotPools = [wrong] * _slots.SLOTS
    assert await c.get("foo") == b"bar"  # MOVED, followed
    assert c.node_for("foo") is right
    p = c.pipeline()
    for i in range(50):
        p.set(f"m:{i}", i).get(f"m:{i}")
    c._slotPools = [wrong] * _slots.SLOTS
    assert (await p.execute())[1::2] == [str(i).encode() for i in range(50)]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_ask_during_a_slot_migration(own_cluster, clusters) -> None:
    """Half-way through moving a slot, a moved key answers through ASK; the map is unchanged."""
    c = clusters(own_cluster)
    await c.ready()
    await c.set("{mig}a", "A")
    await c.set("{mig}b", "B")
    slot = _slots.key_slot("mig")
    source = c.node_for("{mig}a")
    target = next(p for p in c.primaries() if p is not source)
    source_id = (await source.execute("CLUSTER", "MYID")).decode()
    target_id = (await target.execute("CLUSTER", "MYID")).decode()
    await target.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    await source.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    assert await source.execute("MIGRATE", target.host, target.port, "{mig}a", 0, 5000) == b"OK"
    assert await c.get("{mig}a") == b"A"  # ASK → ASKING + GET on the target
    assert await c.get("{mig}b") == b"B"  # still on the source
    assert c.node_for("{mig}a") is source
    assert await source.execute("MIGRATE", target.host, target.port, "{mig}b", 0, 5000) == b"OK"
    for node in c.primaries():
        await node.execute("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert await c.get("{mig}b") == b"B"  # MOVED now
    assert c.node_for("{mig}a") is target
    assert await c.get("{mig}a") == b"A"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_reads_from_replicas(shared_cluster, clusters) -> None:
    c = clusters(shared_cluster, read_from_replicas=True)
    await c.ready()
    await c.set("r", "v")

    async def replica_gets() -> int:
        total = 0
        for replicas in c.topology.replicas.values():
            for r in replicas:
                info = (await c.node(r).execute("INFO", "commandstats")).decode()
                for line in info.splitlines():
                    if line.startswith("cmdstat_get:"):
                        total += int(line.split("calls=")[1].split(",")[0])
        return total

    before = await replica_gets()
    # A replica may lag the primary by a moment; read until it has the value.
    values = [await c.get("r") for _ in range(40)]
    assert set(values) <= {b"v", None} and values[-1] == b"v"
    assert await replica_gets() - before >= 10
    assert await c.incr("r2") >= 1  # writes still go to the primary


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_sharded_pubsub(shared_cluster, clusters) -> None:
    c = clusters(shared_cluster, encoding="utf-8")
    got: list[tuple[str, str]] = []
    arrived = defer.Deferred()

    def on_message(channel: str, message: str) -> None:
        got.append((channel, message))
        if len(got) == 6:
            arrived.callback(None)

    ps = c.pubsub()
    channels = [f"ch:{i}" for i in range(6)]
    await ps.ssubscribe(*channels, callback=on_message)
    assert len({c.node_for(ch) for ch in channels}) > 1  # they live on several nodes
    for ch in channels:
        assert await c.spublish(ch, f"hello {ch}") == 1
    await arrived
    assert sorted(got) == sorted((ch, f"hello {ch}") for ch in channels)
    await ps.sunsubscribe(*channels)
    classic = defer.Deferred()
    await ps.subscribe("news", callback=lambda ch, m: classic.callback(m))
    # PUBLISH counts the receivers of the node it reached; the cluster bus carries it on.
    await c.publish("news", "all nodes")
    assert await classic.addTimeout(10, reactor) == "all nodes"
    await ps.close()


async def _load(c: RedisCluster, stop: list[bool], callers: int = 50) -> dict[str, Any]:
    """``callers`` loops, each SETting its own key to its own counter and reading it back:
    any reply meant for someone else shows up as a wrong value."""
    stats: dict[str, Any] = {"ok": 0, "errors": [], "wrong": 0, "last_ok": 0.0}

    async def caller(n: int) -> None:
        i = 0
        while not stop[0]:
            i += 1
            key, value = f"load:{n}", f"{n}:{i}"
            try:
                await c.set(key, value)
                got = await c.get(key)
            except (RedisConnectionError, RedisTimeoutError, RedisClusterError) as e:
                stats["errors"].append(e)
                await sleep(0.01)
                continue
            if got not in (value, value.encode()):
                stats["wrong"] += 1
            stats["ok"] += 1
            stats["last_ok"] = reactor.seconds()

    stats["done"] = defer.gatherResults([defer.ensureDeferred(caller(n)) for n in range(callers)])
    return stats


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.05)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_manual_failover_under_load(own_cluster, clusters) -> None:
    c = clusters(own_cluster, size=3)
    await c.ready()
    stop = [False]
    stats = await _load(c, stop)
    await _until(lambda: stats["ok"] > 2000, 30, "load")
    old = c.primaries()[0]
    replica = c.topology.replicas[(old.host, old.port)][0]
    assert await c.node(replica).execute("CLUSTER", "FAILOVER") == b"OK"
    await threads.deferToThread(lambda: _wait_role(own_cluster, replica[1], "master"))
    mark = stats["ok"]
    await _until(lambda: stats["ok"] > mark + 2000, 30, "load after the failover")
    stop[0] = True
    await stats["done"]
    assert stats["wrong"] == 0
    assert stats["errors"] == []  # a graceful failover answers everyone (MOVED, followed)
    assert (replica, False) in c.pools and c.node(replica) in c.primaries()


def _wait_role(servers: RedisClusterServers, port: int, role: str) -> None:
    from tests.redis_cluster import wait_until

    wait_until(lambda: servers.role(port) == role, 30, 0.1, f"{port} to become {role}")


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_kill_a_primary_under_load(own_cluster, clusters) -> None:
    """kill -9 a primary: only commands in flight on it fail, the rest wait for the promoted
    replica; sharded subscribers move with the slot."""
    c = clusters(own_cluster, size=3, encoding="utf-8", failover_timeout=30)
    await c.ready()
    victim = c.primaries()[1]
    victim_address = (victim.host, victim.port)
    replica = c.topology.replicas[victim_address][0]
    channel = next(f"ev:{i}" for i in range(1000) if c.node_for(f"ev:{i}") is victim)
    heard: list[str] = []
    ps = c.pubsub()
    await ps.ssubscribe(channel, callback=lambda ch, m: heard.append(m))
    stop = [False]
    stats = await _load(c, stop)
    await _until(lambda: stats["ok"] > 2000, 30, "load")
    own_cluster.kill(victim.port)
    killed_at = reactor.seconds()
    await _until(lambda: stats["last_ok"] > killed_at and (c.node(replica) in c.primaries()),
                 60, "the replica to be promoted")  # fmt: skip
    mark = stats["ok"]
    await _until(lambda: stats["ok"] > mark + 2000, 30, "load after the failover")
    stop[0] = True
    await stats["done"]
    assert stats["wrong"] == 0
    # Only what was in flight on the dead node fails: at most one command per caller.
    print(f"\nkill -9: {stats['ok']} answered, {len(stats['errors'])} failed")
    assert len(stats["errors"]) <= 50, Counter(str(e) for e in stats["errors"])
    assert all(isinstance(e, RedisConnectionError) for e in stats["errors"]), {
        str(e) for e in stats["errors"] if not isinstance(e, RedisConnectionError)
    }
    await _until(lambda: ps._where.get(channel) == replica, 10, "the channel to move")

    async def published() -> bool:
        return bool(await c.spublish(channel, "after"))

    await _until_async(published, 10)
    await _until(lambda: "after" in heard, 10, "a message on the moved channel")
    await ps.close()


async def _until_async(check, timeout: float) -> None:
    deadline = reactor.seconds() + timeout
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError("timed out")
        await sleep(0.05)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_unreachable_seeds_named(clusters) -> None:
    from tests.redis_server import free_port

    c = RedisCluster([("127.0.0.1", free_port())], connect_timeout=1)
    try:
        with pytest.raises(RedisClusterError, match="no node of .* gave the slot map"):
            await c.get("k")
    finally:
        await c.close()
