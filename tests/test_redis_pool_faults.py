"""The Redis pool under connect failures, deterministically: task.Clock and a fake endpoint."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectionRefusedError as TwistedRefused
from twisted.python.failure import Failure

from tx_swoole.clients.redis import RedisPool
from tx_swoole.errors import RedisAcquireTimeoutError, RedisConnectionError

from .support import EndpointPool


class RefusingEndpoint:
    """Every connect is refused after ``delay`` seconds of the pool's clock."""

    def __init__(self, clock: task.Clock, delay: float = 0.01) -> None:
        self.clock, self.delay, self.attempts = clock, delay, 0

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.attempts += 1
        d: defer.Deferred[Any] = defer.Deferred()
        self.clock.callLater(self.delay, d.errback, Failure(TwistedRefused()))
        return d


def refusing_pool(**kw: Any) -> tuple[RedisPool, RefusingEndpoint, task.Clock]:
    clock = task.Clock()
    endpoint = RefusingEndpoint(clock)
    pool = EndpointPool("127.0.0.1", 1, reactor=clock, **kw)
    pool.fake = endpoint
    return pool, endpoint, clock


def outcomes(ds: list[defer.Deferred[Any]]) -> list[type]:
    out: list[type] = []
    for d in ds:
        d.addErrback(lambda f: out.append(f.type))  # type: ignore[arg-type]
    return out


def test_connects_failing_together_are_one_backoff_step() -> None:
    """Ten connects refused together (50 callers, size 10) count as one outage: the retry
    comes after the first back-off delay, not the tenth."""
    pool, endpoint, clock = refusing_pool(size=10)
    calls = [pool.get("k") for _ in range(50)]
    errors = outcomes(calls)
    clock.advance(0.01)
    assert endpoint.attempts == 10 and pool._failures == 1
    assert len(errors) == 50 and set(errors) == {RedisConnectionError}
    # backoffPolicy(0.1, factor 2) at step 1 is 0.2 s plus up to 1 s of jitter (step 10: 10 s)
    assert pool._retryAt - clock.seconds() < 1.2


def test_queued_callers_fail_at_once_with_the_connection_error() -> None:
    """Callers queued behind connects that fail get the connection error when they fail,
    not RedisAcquireTimeoutError at acquire_timeout (nor never, with acquire_timeout=0)."""
    for acquire_timeout in (5.0, 0.0):
        pool, endpoint, clock = refusing_pool(size=2, acquire_timeout=acquire_timeout)
        errors = outcomes([pool.get("k") for _ in range(20)])
        clock.advance(0.01)
        assert len(errors) == 20 and RedisAcquireTimeoutError not in errors
        assert set(errors) == {RedisConnectionError}


def test_during_backoff_commands_fail_at_once_and_the_next_retry_connects() -> None:
    """While backing off a command fails at once (saying when the retry is); after the
    delay the next command tries to connect again."""
    pool, endpoint, clock = refusing_pool(size=1)
    outcomes([pool.get("k")])
    clock.advance(0.01)
    failed: list[Failure] = []
    pool.get("k").addErrback(failed.append)
    assert failed and "retrying in" in str(failed[0].value) and endpoint.attempts == 1
    clock.advance(1.5)
    retried = outcomes([pool.get("k")])
    assert endpoint.attempts == 2
    clock.advance(0.01)  # (refused again: every Deferred settles before the test ends)
    assert retried == [RedisConnectionError]


def test_the_interface_declares_the_whole_command_surface() -> None:
    """IRedisCommands declares every command method, so a fake that has only some of them
    is caught by verifyObject, and one with all of them passes."""
    import pytest
    from zope.interface import implementer
    from zope.interface.exceptions import Invalid
    from zope.interface.verify import verifyObject

    from tx_swoole.clients._commands import RedisCommands
    from tx_swoole.clients.redis import IRedisCommands

    names = set(IRedisCommands.names())
    assert {"get", "set", "hset", "zadd", "lpush", "xadd", "expire", "incr"} <= names
    assert names == {n for n in vars(RedisCommands) if not n.startswith("_")}

    @implementer(IRedisCommands)
    class HalfFake:
        def get(self, key: Any) -> Any: ...

        def set(self, key: Any, value: Any, ex: Any = None, px: Any = None) -> Any: ...

    with pytest.raises(Invalid):
        verifyObject(IRedisCommands, HalfFake())
    pool, _, _ = refusing_pool()
    assert verifyObject(IRedisCommands, pool)
