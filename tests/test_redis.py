"""The Redis client against a real redis-server: commands, pooling, and reliability."""

from __future__ import annotations

import os
import pickle
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from tx_swoole.clients.redis import IRedisCommands, RedisConnection, RedisPool
from tx_swoole.errors import (
    RedisAcquireTimeoutError,
    RedisConnectionError,
    RedisPoolClosedError,
    RedisReplyError,
    RedisTimeoutError,
    RedisWrongProcessError,
)

pytestmark = pytest.mark.integration


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.async_yield_fixture
async def pools(redis_server) -> AsyncIterator[Callable[..., RedisPool]]:
    """``pools(**kwargs)`` makes a RedisPool on the module's redis-server (its port unless
    ``unix_socket`` is given); every pool made is closed after the test."""
    made: list[RedisPool] = []

    def make(**kwargs: Any) -> RedisPool:
        if "unix_socket" not in kwargs:
            kwargs.setdefault("port", redis_server.port)
        made.append(RedisPool(**kwargs))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest_twisted.ensureDeferred
async def test_commands_of_every_family(redis_server, pools) -> None:
    """Strings, keys/expiry, hashes, lists, sets, sorted sets, counters, scan, streams."""
    pool = pools(size=3)
    await pool.flushdb()
    assert await pool.set("s", "v", ex=100) is True and await pool.get("s") == b"v"
    assert await pool.set("s", "w", nx=True) is False and await pool.get("s") == b"v"
    assert await pool.ttl("s") > 0 and await pool.persist("s") is True
    assert await pool.mset({"a": 1, "b": 2}) is True and await pool.mget("a", "b", "zz") == [
        b"1",
        b"2",
        None,
    ]
    assert await pool.incr("n") == 1 and await pool.incr("n", 5) == 6 and await pool.decr("n") == 5
    assert await pool.incrbyfloat("f", 1.5) == 1.5
    assert await pool.hset("h", mapping={"x": 1, "y": 2}) == 2
    assert (
        await pool.hgetall("h") == {b"x": b"1", b"y": b"2"} and await pool.hincrby("h", "x", 3) == 4
    )
    assert await pool.rpush("l", "a", "b", "c") == 3 and await pool.lrange("l") == [
        b"a",
        b"b",
        b"c",
    ]
    assert await pool.lpop("l") == b"a" and await pool.llen("l") == 2
    assert await pool.sadd("set", "p", "q") == 2 and await pool.smembers("set") == {b"p", b"q"}
    assert await pool.sismember("set", "p") is True
    assert await pool.zadd("z", {"m1": 1, "m2": 2.5}) == 2
    assert await pool.zrange("z", withscores=True) == [(b"m1", 1.0), (b"m2", 2.5)]
    assert await pool.zscore("z", "m2") == 2.5 and await pool.zincrby("z", 1, "m1") == 2.0
    assert await pool.exists("s", "h", "nope") == 2 and await pool.delete("s") == 1
    assert await pool.expire("h", 100) is True and await pool.type("h") == b"hash"
    keys = sorted([k async for k in pool.scan_iter(count=2)])
    assert keys == sorted([b"a", b"b", b"n", b"f", b"h", b"l", b"set", b"z"])
    assert dict([kv async for kv in pool.hscan_iter("h")]) == {b"x": b"4", b"y": b"2"}
    entry = await pool.xadd("st", {"k": "v"})
    assert await pool.xlen("st") == 1 and await pool.xrange("st") == [(entry, {b"k": b"v"})]
    assert await pool.xread({"st": "0"}) == {b"st": [(entry, {b"k": b"v"})]}
    assert await pool.execute("ECHO", "raw") == b"raw"
    with pytest.raises(RedisReplyError, match=f"WRONGTYPE.*127.0.0.1:{redis_server.port}"):
        await pool.lpush("h", "x")
    assert await pool.ping() == b"PONG"  # the connection stays usable after an error


@pytest_twisted.ensureDeferred
async def test_decoding_and_unix_socket(redis_server, pools) -> None:
    """encoding= gives str replies; unix_socket= connects over a Unix socket."""
    pool = pools(unix_socket=redis_server.unix, encoding="utf-8")
    await pool.set("u", "é")
    assert await pool.get("u") == "é"
    assert pool.address == redis_server.unix


@pytest_twisted.ensureDeferred
async def test_interfaces_verified(pools) -> None:
    """Pool, connection and pipeline all provide IRedisCommands."""
    pool = pools()
    verifyObject(IRedisCommands, pool)
    verifyObject(IRedisCommands, pool.pipeline())
    async with pool.client() as conn:
        assert isinstance(conn, RedisConnection)
        verifyObject(IRedisCommands, conn)


@pytest_twisted.ensureDeferred
async def test_concurrent_callers_each_get_their_own_reply(pools) -> None:
    """500 concurrent callers over a pool of 4 (implicit pipelining): every reply matches."""
    pool = pools(size=4)
    await defer.gatherResults([pool.set(f"k{i}", f"v{i}") for i in range(500)])
    got = await defer.gatherResults([pool.get(f"k{i}") for i in range(500)])
    assert got == [f"v{i}".encode() for i in range(500)]
    assert len(pool.connections) <= 4


@pytest_twisted.ensureDeferred
async def test_pipeline_errors_in_place(pools) -> None:
    """An explicit pipeline returns a list with errors where they happened."""
    pool = pools()
    p = pool.pipeline()
    p.set("p", 1).incr("p").execute("NOSUCH").hgetall("nohash").get("p")
    result = await p.execute()
    assert result[:2] == [True, 2] and isinstance(result[2], RedisReplyError)
    assert result[3:] == [{}, b"2"] and await pool.pipeline().execute() == []


@pytest_twisted.ensureDeferred
async def test_transaction_with_watch_retries(pools) -> None:
    """transaction() retries when a watched key changes and ends with the right value."""
    pool = pools(size=4)
    other = pools(size=1)
    await pool.set("counter", 0)
    attempts = []

    async def add_ten(conn: RedisConnection) -> list[tuple[Any, ...]]:
        value = int(await conn.get("counter"))
        attempts.append(value)
        if len(attempts) == 1:
            await other.incr("counter")  # someone else writes between WATCH and EXEC
        return [("SET", "counter", value + 10)]

    assert await pool.transaction(add_ten, "counter") == [b"OK"]
    assert attempts == [0, 1] and await pool.get("counter") == b"11"
    assert len(pool.shared) == len(pool.connections)  # connection given back


@pytest_twisted.ensureDeferred
async def test_blocking_command_uses_exclusive_connection(pools) -> None:
    """BLPOP holds its own connection: other commands are not stuck behind it."""
    pool = pools(size=2)
    await pool.delete("q")
    popped = pool.blpop(["q"], timeout=5)
    started = time.monotonic()
    assert await pool.get("nothing") is None
    assert time.monotonic() - started < 1
    await pool.rpush("q", "job")
    assert await popped == [b"q", b"job"]
    assert await pool.blpop(["q"], timeout=0.1) is None


@pytest_twisted.ensureDeferred
async def test_timeout_never_shifts_replies(redis_server, pools) -> None:
    """A command that times out fails with RedisTimeoutError, the others on its connection
    with RedisConnectionError, and every later command gets its own reply."""
    pool = pools(size=1, command_timeout=0.4)
    admin = pools(size=1)
    await pool.mset({"t1": "one", "t2": "two"})
    await admin.execute("CLIENT", "PAUSE", 1200, "ALL")
    first, second = pool.get("t1"), pool.get("t2")
    with pytest.raises(RedisTimeoutError, match=f"127.0.0.1:{redis_server.port}"):
        await first
    with pytest.raises(RedisConnectionError):
        await second
    await sleep(1.0)
    assert await pool.get("t2") == b"two" and await pool.get("t1") == b"one"


@pytest_twisted.ensureDeferred
async def test_cancelled_command_reply_is_dropped(pools) -> None:
    """Cancelling a pending command does not shift the replies of later ones."""
    pool = pools(size=1)
    await pool.mset({"c1": "one", "c2": "two"})
    first = pool.get("c1")
    second = pool.get("c2")
    first.cancel()
    assert await second == b"two"
    with pytest.raises(defer.CancelledError):
        await first
    assert await pool.get("c1") == b"one"


@pytest_twisted.ensureDeferred
async def test_refused_acquire_timeout_and_closed_pool(redis_server) -> None:
    """Distinct errors: refused (with host:port), acquire timeout, pool closed."""
    from tests.redis_server import free_port

    port = free_port()
    dead = RedisPool(port=port, connect_timeout=1)
    with pytest.raises(RedisConnectionError, match=f"refused: nothing listens on 127.0.0.1:{port}"):
        await dead.get("x")
    pool = RedisPool(port=redis_server.port, size=1, acquire_timeout=0.3)
    async with pool.client():
        started = time.monotonic()
        with pytest.raises(RedisAcquireTimeoutError, match="acquire_timeout=0.3"):
            async with pool.client():
                pass
        assert 0.25 < time.monotonic() - started < 2
    assert await pool.get("x") is None  # the connection came back
    await pool.close()
    with pytest.raises(RedisPoolClosedError):
        await pool.get("x")


@pytest_twisted.ensureDeferred
async def test_scripts_fall_back_from_evalsha_to_eval(pools) -> None:
    """register_script runs EVALSHA and falls back to EVAL when the script is not cached."""
    pool = pools()
    await pool.execute("SCRIPT", "FLUSH")
    script = pool.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await pool.set("sc", 1)
    assert await script(keys=["sc"], args=[5]) == 6  # EVAL (not cached yet)
    assert await script(keys=["sc"], args=[5]) == 11  # EVALSHA


@pytest_twisted.ensureDeferred
async def test_pubsub_patterns_and_resubscribe_after_restart(own_redis) -> None:
    """Callbacks get messages for channels and patterns, again after Redis restarts."""
    pool = RedisPool(port=own_redis.port, connect_timeout=2)
    ps = pool.pubsub()
    got: list[tuple[bytes, bytes]] = []
    try:
        await ps.subscribe("news", callback=lambda c, m: got.append((c, m)))
        await ps.psubscribe("sport.*", callback=lambda c, m: got.append((c, m)))
        await pool.publish("news", "one")
        await pool.publish("sport.tennis", "two")
        for _ in range(100):
            if len(got) == 2:
                break
            await sleep(0.02)
        assert got == [(b"news", b"one"), (b"sport.tennis", b"two")]
        own_redis.stop()
        own_redis.start()
        for _ in range(200):  # wait for the resubscribe
            try:
                if await pool.publish("news", "three") == 1:
                    break
            except RedisConnectionError:
                pass  # the pool's connection to the old server
            await sleep(0.05)
        for _ in range(100):
            if len(got) == 3:
                break
            await sleep(0.02)
        assert got[2] == (b"news", b"three")
    finally:
        await ps.close()
        await pool.close()


@pytest_twisted.ensureDeferred
async def test_redis_restart_mid_load(own_redis) -> None:
    """Kill Redis under load: pending commands fail with RedisConnectionError, nothing hangs,
    nothing is mismatched, and commands succeed again once Redis is back."""
    pool = RedisPool(port=own_redis.port, size=4, connect_timeout=1, command_timeout=2)
    errors: list[BaseException] = []
    mismatches: list[Any] = []
    stop = False

    async def caller(i: int) -> None:
        n = 0
        while not stop:
            n += 1
            key, value = f"r{i}", f"{i}-{n}"
            try:
                await pool.set(key, value)
                got = await pool.get(key)
                if got not in (value.encode(), None):
                    mismatches.append((key, value, got))
            except (RedisConnectionError, RedisTimeoutError) as e:
                errors.append(e)
                await sleep(0.01)

    callers = [defer.ensureDeferred(caller(i)) for i in range(20)]
    await sleep(0.5)
    own_redis.stop()
    await sleep(0.5)
    own_redis.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if await pool.set("probe", 1):
                break
        except (RedisConnectionError, RedisTimeoutError):
            await sleep(0.1)
    await sleep(0.5)
    stop = True
    await defer.gatherResults(callers)
    assert mismatches == [] and errors
    assert all(isinstance(e, RedisConnectionError | RedisTimeoutError) for e in errors)
    assert await pool.get("probe") == b"1"
    await pool.close()


def test_pool_refuses_use_in_another_process(redis_server) -> None:
    """After os.fork the pool fails fast in the child and tells to use worker_start; it
    cannot be pickled to another process either."""
    pool = RedisPool(port=redis_server.port)
    with pytest.raises(RedisWrongProcessError):
        pickle.dumps(pool)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no reactor use, just the pool's check
        failures: list[Any] = []
        pool.get("x").addErrback(failures.append)
        ok = failures and failures[0].check(RedisWrongProcessError)
        os.write(write, b"1" if ok and "worker_start" in str(failures[0].value) else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.close(write)


@pytest.mark.timeout(120)
def test_redis_counter_example_503_and_recovery(own_redis, tmp_path) -> None:
    """The example counts per path through workers; with Redis down it answers 503 with the
    reason, and recovers by itself."""
    import http.client

    from .support import EXAMPLES, Twistd, write_config

    os.environ["REDIS_PORT"] = str(own_redis.port)
    try:
        cfg = write_config(
            tmp_path, {"type": "http", "port": 0, "app": "redis_counter:handler"},
            {"worker_num": 2}, {"worker_start": "redis_counter:on_worker_start",
                                "worker_stop": "redis_counter:on_worker_stop"},
        )  # fmt: skip
        with Twistd(cfg, cwd=EXAMPLES) as server:
            port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
            server.wait_for(rb"ready", count=2)

            def get(path: str) -> tuple[int, str]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.read().decode()

            assert [get("/a"), get("/a"), get("/b")] == [
                (200, "/a 1\n"),
                (200, "/a 2\n"),
                (200, "/b 1\n"),
            ]
            own_redis.stop()
            status, body = get("/a")
            assert status == 503 and f"127.0.0.1:{own_redis.port}" in body
            own_redis.start()
            deadline = time.monotonic() + 30
            streak = 0  # both workers recover (each backs off on its own)
            while time.monotonic() < deadline and streak < 6:
                streak = streak + 1 if get("/c")[0] == 200 else 0
                time.sleep(0.1)
            assert streak == 6
            assert server.stop() == 0
    finally:
        del os.environ["REDIS_PORT"]


def _self_signed(directory: Any) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(random.randint(1, 2**31))
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = str(directory / "cert.pem"), str(directory / "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


@pytest_twisted.ensureDeferred
async def test_tls(tmp_path) -> None:
    """tls= connects over TLS, verifying the server certificate."""
    from twisted.internet import ssl

    from tests.redis_server import RedisServer, free_port

    cert, key = _self_signed(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path, ["--tls-port", str(tls_port), "--tls-cert-file", cert,
                                    "--tls-key-file", key, "--tls-ca-cert-file", cert,
                                    "--tls-auth-clients", "no"])  # fmt: skip
    server.start()
    try:
        with open(cert) as f:
            trust = ssl.Certificate.loadPEM(f.read())
        pool = RedisPool(port=tls_port, tls=ssl.optionsForClientTLS("localhost", trustRoot=trust))
        assert await pool.set("secure", "yes") is True and await pool.get("secure") == b"yes"
        await pool.close()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_idle_connections_health_checked_and_evicted(pools) -> None:
    """Idle connections are PINGed every health_check_interval and closed after
    idle_timeout."""
    checked = pools(size=1, health_check_interval=0.2, command_timeout=1)
    evicted = pools(size=1, idle_timeout=0.3, command_timeout=1)
    admin = pools(size=1, health_check_interval=0)
    await checked.execute("CLIENT", "SETNAME", "health")
    await evicted.get("x")
    await sleep(1.2)
    clients = (await admin.execute("CLIENT", "LIST")).decode()
    health = [line for line in clients.splitlines() if "name=health" in line]
    assert health and "cmd=ping" in health[0]
    assert evicted.connections == set()
    assert await evicted.get("x") is None  # a new connection on demand

    # both: the pings keep it checked, and do not count as use (it is still evicted)
    both = pools(size=1, health_check_interval=0.2, idle_timeout=1.0, command_timeout=1)
    await both.execute("CLIENT", "SETNAME", "both")
    deadline = reactor.seconds() + 10

    async def pinged() -> bool:
        lines = (await admin.execute("CLIENT", "LIST")).decode().splitlines()
        return any("name=both" in line and "cmd=ping" in line for line in lines)

    while not await pinged():
        assert reactor.seconds() < deadline, "no health check"
        await sleep(0.05)
    while both.connections:
        assert reactor.seconds() < deadline, "pinged connections were never evicted"
        await sleep(0.05)
