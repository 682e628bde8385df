"""The MySQL pool's pipelining (``pipeline=N``) against a private MariaDB: reads queued in the
pool go out together on a connection that frees, and every caller still gets its own answer,
whatever comes between them (errors, a timeout, a cancel, big and wrapping answers)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tx_swoole.clients.mysql import MySQLConnection, MySQLPool
from tx_swoole.errors import MySQLServerError, MySQLTimeoutError

pytestmark = pytest.mark.integration


@pytest.fixture
def rides(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement sent behind others (pipelined), in order."""
    seen: list[str] = []
    ride = MySQLConnection.ride

    def spy(self: MySQLConnection, prepared: bool, sql: str, *rest: Any) -> None:
        seen.append(sql)
        ride(self, prepared, sql, *rest)

    monkeypatch.setattr(MySQLConnection, "ride", spy)
    return seen


@pytest.fixture
def piped(pools: Any) -> Callable[[int, int], Coroutine[Any, Any, MySQLPool]]:
    """``await piped(size, pipeline)``: a pool with every connection open and ``SELECT ?``
    prepared on each."""

    async def make(size: int, pipeline: int) -> MySQLPool:
        pool: MySQLPool = pools(size=size, pipeline=pipeline)
        await defer.gatherResults([pool.execute("SELECT ?", (0,)) for _ in range(size)])
        return pool

    return make


@pytest_twisted.ensureDeferred
async def test_queued_reads_go_together_and_each_caller_gets_its_own(
    piped: Any, rides: list[str]
) -> None:
    pool = await piped(2, 8)
    ds = [pool.execute("SELECT ?", (i,)) if i % 2 else pool.query("SELECT %s", (f"t{i}",))
          for i in range(300)]  # fmt: skip
    got = await defer.gatherResults(ds)
    assert [r.scalar() for r in got] == [i if i % 2 else f"t{i}" for i in range(300)]
    assert len(rides) > 100  # most went behind others
    for conn in pool.connections:  # all given back, nothing left in flight
        assert conn.current is None and not conn.sent and not conn.reader.split
    assert len(pool.shared) == 2
    # pipeline=1 (the default): one statement at a time on each connection
    plain = await piped(2, 1)
    rides.clear()
    got = await defer.gatherResults([plain.execute("SELECT ?", (i,)) for i in range(50)])
    assert [r.scalar() for r in got] == list(range(50)) and rides == []
    with pytest.raises(ValueError, match="pipeline=0: a whole number"):
        MySQLPool(pipeline=0)


@pytest_twisted.ensureDeferred
async def test_big_and_wrapping_answers_and_errors_between_them(
    piped: Any, rides: list[str]
) -> None:
    pool = await piped(1, 16)
    queries: list[tuple[str, Any]] = []
    for i in range(60):
        kind = i % 4
        if kind == 0:  # 300 rows: the sequence ids wrap past 255 inside the answer
            queries.append(("SELECT seq, %s FROM seq_1_to_300", (i,)))
        elif kind == 1:  # an answer over many reads
            queries.append(("SELECT REPEAT('x', 200000), %s", (i,)))
        elif kind == 2:  # an error in the middle of the pipeline
            queries.append(("SELECT * FROM no_such_table WHERE 1 = %s", (i,)))
        else:
            queries.append(("SELECT %s", (i,)))
    ds = [pool.query(sql, args) for sql, args in queries]
    results = await defer.DeferredList(ds, consumeErrors=True)
    for i, (ok, value) in enumerate(results):
        kind = i % 4
        if kind == 0:
            assert ok and value.rows == [(n, i) for n in range(1, 301)]
        elif kind == 1:
            assert ok and value.rows == [("x" * 200000, i)]
        elif kind == 2:
            assert not ok and value.check(MySQLServerError) and value.value.errno == 1146
        else:
            assert ok and value.scalar() == i
    assert len(rides) > 20
    assert (await pool.query("SELECT 'after'")).scalar() == "after"


@pytest_twisted.ensureDeferred
async def test_only_reads_ride_and_nothing_rides_behind_a_write(
    piped: Any, rides: list[str]
) -> None:
    pool = await piped(1, 16)
    await pool.query("DROP TABLE IF EXISTS piped")
    await pool.query("CREATE TABLE piped (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
    first = pool.query("SELECT SLEEP(0.2)")  # holds the connection: the rest queue
    ds = [pool.query("SELECT %s", (i,)) if i % 5 else
          pool.query("INSERT INTO piped VALUES (%s, %s)", (i, i)) for i in range(40)]  # fmt: skip
    ds.append(pool.query("BEGIN"))  # left open: the connection is closed, as ever
    ds += [pool.query("SELECT %s", (i,)) for i in range(40, 50)]
    await first
    out = await defer.gatherResults(ds)
    assert [r.scalar() for i, r in enumerate(out[:40]) if i % 5] == [i for i in range(40) if i % 5]
    assert [r.scalar() for r in out[41:]] == list(range(40, 50))
    assert rides and all(sql.startswith("SELECT") for sql in rides)
    assert (await pool.query("SELECT COUNT(*) FROM piped")).scalar() == 8


@pytest_twisted.ensureDeferred
async def test_a_timeout_or_a_cancel_in_a_pipeline_touches_no_other_caller(
    piped: Any, rides: list[str]
) -> None:
    pool = await piped(1, 8)
    blocker = pool.query("SELECT SLEEP(0.3), 'blocker'")  # the rest queue behind it
    slow = pool.query("SELECT SLEEP(1), 'slow'", timeout=0.4)  # leads the next pipeline
    behind = [pool.execute("SELECT ?", (i,)) for i in range(6)]
    cancelled = behind[2]
    assert (await blocker)[0][1] == "blocker"
    cancelled.cancel()
    with pytest.raises(MySQLTimeoutError, match="timed out after 0.4s"):
        await slow
    with pytest.raises(defer.CancelledError):
        await cancelled
    # the others ran behind the slow one, were not killed with it, and got their own
    for i, d in enumerate(behind):
        if d is not cancelled:
            assert (await d).scalar() == i
    assert len(rides) == 6
    [conn] = list(pool.connections)
    assert (await pool.execute("SELECT ?", ("served",))).scalar() == "served"
    assert list(pool.connections) == [conn] and conn.current is None
