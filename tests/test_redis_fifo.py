"""The Redis connection's FIFO and the pool's waiters, deterministically: StringTransport
connections and task.Clock, no server (tests/test_redis.py has the real-server side)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tx_swoole.clients.redis import RedisConnection, RedisPool
from tx_swoole.errors import (
    RedisAcquireTimeoutError,
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
)

from .support import EndpointPool


def connection(clock: task.Clock | None = None, timeout: float = 5.0) -> RedisConnection:
    conn = RedisConnection("fake:6379", None, clock or task.Clock(), timeout)
    conn.makeConnection(StringTransport())
    return conn


def wire(conn: RedisConnection) -> bytes:
    transport: Any = conn.transport
    data: bytes = transport.value()
    transport.clear()
    return data


def result(d: defer.Deferred[Any]) -> Any:
    """What ``d`` fired with (a Failure's exception for errors); fails if it has not fired.
    Once per Deferred: it consumes the result."""
    out: list[Any] = []
    d.addBoth(lambda r: out.append(r.value if isinstance(r, Failure) else r))
    assert out, "the Deferred has not fired"
    return out[0]


def split_everywhere(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))] + [[bytes([b]) for b in data]]


REPLIES = b"+first\r\n-ERR second failed\r\n$5\r\nthird\r\n:4\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"


@pytest.mark.parametrize("pieces", split_everywhere(REPLIES))
def test_replies_reach_their_callers_in_order_however_they_arrive(pieces: list[bytes]) -> None:
    conn = connection()
    ds = [conn.execute("GET", str(i)) for i in range(5)]
    assert wire(conn) == b"".join(
        b"*2\r\n$3\r\nGET\r\n$1\r\n%d\r\n" % i for i in range(5)
    )  # each command went out as it was called, in order
    for piece in pieces:
        conn.dataReceived(piece)
    got = [result(d) for d in ds]
    assert got[0] == b"first" and got[2:] == [b"third", 4, [b"a", b"b"]]
    assert isinstance(got[1], RedisReplyError) and "second failed" in str(got[1])
    assert not conn.pending and conn.closedReason is None  # an -ERR leaves it usable


def test_a_cancelled_command_keeps_its_place_and_its_reply_is_dropped() -> None:
    conn = connection()
    first, second, third = (conn.execute("GET", k) for k in "abc")
    second.cancel()
    assert isinstance(result(second), defer.CancelledError) and len(conn.pending) == 3
    conn.dataReceived(b"$1\r\nA\r\n")
    conn.dataReceived(b"$1\r\nB\r\n$1\r\nC\r\n")
    assert (result(first), result(third)) == (b"A", b"C")  # B went to nobody


def test_a_reply_nobody_asked_for_aborts_the_connection() -> None:
    conn = connection()
    d = conn.execute("GET", "a")
    conn.dataReceived(b"+one\r\n+two\r\n")
    assert result(d) == b"one"
    assert isinstance(conn.closedReason, RedisProtocolError)
    transport: Any = conn.transport
    assert transport.disconnected and "no command pending" in str(conn.closedReason)
    assert isinstance(result(conn.execute("GET", "b")), RedisProtocolError)


def test_garbage_fails_everything_pending_with_a_protocol_error() -> None:
    conn = connection()
    ds = [conn.execute("GET", k) for k in "ab"]
    conn.dataReceived(b"?what\r\n")
    errors = [result(d) for d in ds]
    assert all(isinstance(e, RedisProtocolError) for e in errors)
    assert "fake:6379" in str(errors[0])


def test_a_timeout_fails_the_first_and_aborts_so_no_reply_can_shift() -> None:
    clock = task.Clock()
    conn = connection(clock, timeout=2.0)
    ds = [conn.execute("GET", k) for k in "abc"]
    conn.checkTimeout(clock.seconds())  # the sweep first sees the head: timed from here
    clock.advance(1.9)
    conn.checkTimeout(clock.seconds())
    assert not any(d.called for d in ds)
    clock.advance(0.1)
    conn.checkTimeout(clock.seconds())
    first, *others = (result(d) for d in ds)
    assert isinstance(first, RedisTimeoutError) and "timed out after 2.0s" in str(first)
    assert all(type(e) is RedisConnectionError and "earlier command timed out" in str(e)
               for e in others)  # fmt: skip
    conn.dataReceived(b"+late\r\n")  # arrives after the abort: reaches nobody
    assert isinstance(result(conn.execute("GET", "d")), RedisConnectionError)


def test_the_timeout_follows_the_head_of_the_fifo() -> None:
    """A reply that arrives resets the clock for the next command at the head."""
    clock = task.Clock()
    conn = connection(clock, timeout=2.0)
    first, second = conn.execute("GET", "a"), conn.execute("GET", "b")
    conn.checkTimeout(clock.seconds())
    clock.advance(1.5)
    conn.dataReceived(b"+A\r\n")
    conn.checkTimeout(clock.seconds())  # new head: timed from now
    clock.advance(1.5)
    conn.checkTimeout(clock.seconds())
    assert result(first) == b"A" and not second.called
    clock.advance(0.5)
    conn.checkTimeout(clock.seconds())
    assert isinstance(result(second), RedisTimeoutError)


def test_a_deadline_replaces_the_command_timeout() -> None:
    clock = task.Clock()
    conn = connection(clock, timeout=1.0)
    d = conn.send(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n5\r\n", deadline=6.0)
    for t in (1.0, 3.0, 6.0):
        clock.advance(t - clock.seconds())
        conn.checkTimeout(clock.seconds())
        assert not d.called
    clock.advance(0.1)
    conn.checkTimeout(clock.seconds())
    assert isinstance(result(d), RedisTimeoutError)


def test_connection_lost_fails_what_is_pending() -> None:
    conn = connection()
    ds = [conn.execute("GET", k) for k in "ab"]
    conn.connectionLost(Failure(ConnectionResetError("reset by peer")))
    errors = [result(d) for d in ds]
    assert all(type(e) is RedisConnectionError and "connection lost" in str(e) for e in errors)
    assert conn.lost.called


def test_a_pipeline_collects_its_replies_with_errors_in_place() -> None:
    conn = connection()
    before = conn.execute("GET", "x")
    d = conn.send_many([(("SET", "a", 1), None), (("INCR", "s"), None), (("GET", "a"), int)])
    after = conn.execute("GET", "y")
    conn.dataReceived(b"+X\r\n+OK\r\n-ERR not an integer\r\n$1\r\n1\r\n+Y\r\n")
    replies = result(d)
    assert replies[0] == b"OK" and isinstance(replies[1], RedisReplyError) and replies[2] == 1
    assert (result(before), result(after)) == (b"X", b"Y")


def test_a_cancelled_pipeline_drops_its_replies_and_keeps_the_order() -> None:
    conn = connection()
    d = conn.send_many([(("GET", "a"), None), (("GET", "b"), None)])
    after = conn.execute("GET", "c")
    d.cancel()
    conn.dataReceived(b"+A\r\n+B\r\n+C\r\n")
    assert isinstance(result(d), defer.CancelledError) and result(after) == b"C"


# -- the pool's waiters, on fake connections ----------------------------------------------------


class FakeEndpoint:
    """Connects at once to a StringTransport; the connections it made are in ``made``."""

    def __init__(self) -> None:
        self.made: list[RedisConnection] = []

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        conn = factory.buildProtocol(None)
        conn.makeConnection(StringTransport())
        self.made.append(conn)
        return defer.succeed(conn)


def fake_pool(**kw: Any) -> tuple[RedisPool, FakeEndpoint, task.Clock]:
    clock = task.Clock()
    endpoint = FakeEndpoint()
    pool = EndpointPool("127.0.0.1", 1, reactor=clock, **kw)
    pool.fake = endpoint
    return pool, endpoint, clock


class Checkout:
    """``async with pool.client()`` held open until ``release()``."""

    def __init__(self, pool: RedisPool) -> None:
        self.conn: RedisConnection | None = None
        self.error: BaseException | None = None
        self._release: defer.Deferred[None] = defer.Deferred()
        self.done = defer.ensureDeferred(self._run(pool))

    async def _run(self, pool: RedisPool) -> None:
        try:
            async with pool.client() as conn:
                self.conn = conn
                await self._release
        except Exception as e:
            self.error = e

    def release(self) -> None:
        self._release.callback(None)


def test_waiters_get_released_connections_first_come_first_served() -> None:
    pool, endpoint, clock = fake_pool(size=1, acquire_timeout=5.0)
    holder = Checkout(pool)
    waiting = [Checkout(pool) for _ in range(3)]
    assert holder.conn is endpoint.made[0] and not any(w.conn for w in waiting)
    holder.release()
    assert waiting[0].conn is endpoint.made[0] and waiting[1].conn is None
    waiting[0].release()
    assert waiting[1].conn is endpoint.made[0] and waiting[2].conn is None
    waiting[1].release()
    waiting[2].release()
    assert len(endpoint.made) == 1 and pool.shared == endpoint.made


def test_a_waiter_times_out_at_acquire_timeout_naming_the_setting() -> None:
    pool, endpoint, clock = fake_pool(size=1, acquire_timeout=2.0)
    holder = Checkout(pool)
    waiter = Checkout(pool)
    clock.advance(1.9)
    assert waiter.conn is None and waiter.error is None
    clock.advance(0.1)
    assert isinstance(waiter.error, RedisAcquireTimeoutError)
    assert "acquire_timeout=2.0s" in str(waiter.error) and "size=1" in str(waiter.error)
    holder.release()  # the timed-out waiter is not woken later
    assert not pool._waiters and pool.shared == endpoint.made


def test_a_connection_returned_dirty_is_closed_not_shared() -> None:
    pool, endpoint, clock = fake_pool(size=2)
    holder = Checkout(pool)
    assert holder.conn is not None
    holder.conn.execute("MULTI")  # its reply never comes: replies pending
    holder.release()
    assert holder.conn.closedReason is not None and holder.conn not in pool.shared


def test_shared_callers_are_spread_round_robin_once_the_pool_is_full() -> None:
    pool, endpoint, clock = fake_pool(size=3)
    ds = [pool.get(str(i)) for i in range(9)]
    assert len(endpoint.made) == 3
    sent = [wire(c).count(b"GET") for c in endpoint.made]
    assert sorted(sent) == [3, 3, 3]
    for conn in endpoint.made:
        conn.dataReceived(b"+v\r\n" * 3)
    assert [result(d) for d in ds] == [b"v"] * 9
