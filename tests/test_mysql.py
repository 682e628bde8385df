"""The MySQL client against a private MariaDB: handshake, types, statements, the pool, faults."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import random
from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl, task

from tx_swoole.clients.mysql import MySQLPool
from tx_swoole.errors import (
    MySQLAcquireTimeoutError,
    MySQLConnectionError,
    MySQLPoolClosedError,
    MySQLServerError,
    MySQLTimeoutError,
    MySQLWrongProcessError,
)

from .mysql_server import DATABASE, PASSWORD, USER

pytestmark = pytest.mark.integration


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_typed_results_escaping_and_server_errors(pools: Any) -> None:
    pool = pools()
    await pool.query("DROP TABLE IF EXISTS typed")
    await pool.query(
        "CREATE TABLE typed (id INT AUTO_INCREMENT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED,"
        " d DECIMAL(12,4), f DOUBLE, dt DATETIME(6), dd DATE, t TIME(3), j JSON, s VARCHAR(50),"
        " b VARBINARY(20), n INT NULL, y YEAR)"
    )
    nasty = 'it\'s \\ "quoted"; DROP TABLE typed; -- \x00 \n é ☃'
    binary = bytes(range(256))[:20]
    when = datetime.datetime(2026, 12, 2, 13, 14, 15, 123456)
    ins = await pool.query(
        "INSERT INTO typed (i, u, d, f, dt, dd, t, j, s, b, n, y) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (-(2**62), 2**64 - 1, Decimal("12345678.1234"), 1.5, when, when.date(),
         datetime.timedelta(hours=-30, minutes=-1, milliseconds=-500), {"a": [1, 2]}, nasty,
         binary, None, 2024),
    )  # fmt: skip
    assert (ins.affected_rows, ins.insert_id) == (1, 1)
    for how in ("query", "execute"):
        r = await getattr(pool, how)("SELECT i, u, d, f, dt, dd, t, j, s, b, n, y FROM typed "
                                     "WHERE s = %s" if how == "query" else
                                     "SELECT i, u, d, f, dt, dd, t, j, s, b, n, y FROM typed "
                                     "WHERE s = ?", (nasty,))  # fmt: skip
        assert r.one() == (-(2**62), 2**64 - 1, Decimal("12345678.1234"), 1.5, when,
                           when.date(), -datetime.timedelta(hours=30, minutes=1, seconds=0.5),
                           {"a": [1, 2]}, nasty, binary, None, 2024), how  # fmt: skip
    assert r.names[:3] == ["i", "u", "d"]
    pairs = await pool.query("SELECT seq, CONCAT('n', seq) FROM seq_1_to_3")
    assert pairs == [(1, "n1"), (2, "n2"), (3, "n3")] and isinstance(pairs, list)  # the rows
    assert ins == [] and not ins  # a statement without rows: an empty list
    assert (await pool.query("SELECT COUNT(*) FROM typed")).scalar() == 1  # not dropped
    assert (await pool.query("SELECT %(a)s + %(b)s AS x", {"a": 2, "b": 3})).dicts() == [{"x": 5}]
    assert (await pool.query("SELECT 1 IN %s", ([1, 2, 3],))).scalar() == 1
    with pytest.raises(MySQLServerError) as e:
        await pool.query("SELECT * FROM no_such_table")
    assert (e.value.errno, e.value.sqlstate) == (1146, "42S02")
    with pytest.raises(MySQLServerError, match="1062.*Duplicate"):
        await pool.query("INSERT INTO typed (id) VALUES (1)")
    assert (await pool.query("SELECT 'still fine'")).scalar() == "still fine"
    # NO_BACKSLASH_ESCAPES: the same value still goes in intact
    async with pool.connection() as conn:
        await conn.query("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        r = await conn.query("SELECT %s", (nasty,))
        assert r.scalar() == nasty
        await conn.query("SET SESSION sql_mode = DEFAULT")


@pytest_twisted.ensureDeferred
async def test_multiple_result_sets_big_packets_and_prepared_cache(pools: Any) -> None:
    pool = pools(multi_statements=True, statement_cache_size=2)
    r = await pool.query("SELECT 1 AS a; SELECT 2 AS b, 3 AS c; DO 0")
    sets = list(r.sets())
    assert [s.rows for s in sets] == [[(1,)], [(2, 3)], []]
    await pool.query("DROP PROCEDURE IF EXISTS two; CREATE PROCEDURE two() "
                     "BEGIN SELECT 'x'; SELECT 'y', 'z'; END")  # fmt: skip
    r = await pool.query("CALL two()")
    assert [s.rows for s in r.sets()][:2] == [[("x",)], [("y", "z")]]
    big = os.urandom(20 * 1024 * 1024)  # over one 16 MiB packet, both ways
    await pool.query("DROP TABLE IF EXISTS blobs; CREATE TABLE blobs (b LONGBLOB)")
    await pool.execute("INSERT INTO blobs VALUES (?)", (big,))
    assert (await pool.query("SELECT b FROM blobs")).scalar() == big
    assert (await pool.execute("SELECT LENGTH(b), b FROM blobs")).one() == (len(big), big)
    with pytest.raises(TypeError, match="takes 1 parameters, 2 given"):
        await pool.execute("SELECT ?", (1, 2))
    for i in range(5):  # more statements than the cache holds: old ones closed, all work
        assert (await pool.execute(f"SELECT ? + {i}", (1,))).scalar() == 1 + i
    multi = pools(multi_statements=False)
    with pytest.raises(MySQLServerError, match="1064"):  # off by default: no stacked queries
        await multi.query("SELECT 1; SELECT 2")


@pytest_twisted.ensureDeferred
async def test_local_infile_is_off_unless_a_directory_is_given(pools: Any, tmp_path: Any) -> None:
    data = tmp_path / "rows.tsv"
    data.write_text("1\tone\n2\ttwo\n")
    pool = pools()
    await pool.query("DROP TABLE IF EXISTS loaded")
    await pool.query("CREATE TABLE loaded (i INT, s TEXT)")
    with pytest.raises(MySQLServerError):  # the client does not offer LOCAL INFILE at all
        await pool.query("LOAD DATA LOCAL INFILE %s INTO TABLE loaded", (str(data),))
    allowed = pools(local_infile=str(tmp_path))
    r = await allowed.query("LOAD DATA LOCAL INFILE %s INTO TABLE loaded", (str(data),))
    assert r.affected_rows == 2
    r = await allowed.query("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE loaded")
    assert r.affected_rows == 0  # outside the directory: answered as an empty file
    assert (await pool.query("SELECT COUNT(*) FROM loaded")).scalar() == 2


@pytest_twisted.ensureDeferred
async def test_tls_unix_socket_auth_errors_and_the_fork_guard(pools: Any, mariadb: Any) -> None:
    ca = ssl.Certificate.loadPEM(mariadb.certs["ca"].read_bytes())
    tls = pools(tls=ssl.optionsForClientTLS("localhost", trustRoot=ca))
    r = await tls.query("SHOW SESSION STATUS LIKE 'Ssl_version'")
    assert r.one()[1].startswith("TLS")  # type: ignore[index]
    unix = pools(unix_socket=mariadb.unix)
    assert (await unix.query("SELECT 1")).scalar() == 1
    assert (await pools(user="nopass", password="").query("SELECT 2")).scalar() == 2
    with pytest.raises(MySQLServerError) as e:
        await pools(password="wrong").query("SELECT 1")
    assert e.value.errno == 1045
    with pytest.raises(MySQLServerError, match="1049"):
        await pools(database="no_such_db").query("SELECT 1")
    with pytest.raises(MySQLConnectionError, match="nothing listens on 127.0.0.1:1"):
        await pools(port=1).query("SELECT 1")
    pool = pools()
    with pytest.raises(MySQLWrongProcessError, match="worker_start"):
        pickle.dumps(pool)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if isinstance(pool._check(), MySQLWrongProcessError) else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest_twisted.ensureDeferred
async def test_a_timed_out_query_is_killed_and_the_next_caller_gets_its_own(pools: Any) -> None:
    pool = pools(size=1, query_timeout=0.5)
    await pool.query("SELECT 1")
    [conn] = list(pool.connections)
    with pytest.raises(MySQLTimeoutError, match="timed out after 0.5s"):
        await pool.query("SELECT SLEEP(30), 'slow'")
    r = await pool.query("SELECT 'mine'")  # same connection, after the killed one ended
    assert r.scalar() == "mine"
    assert list(pool.connections) == [conn]
    # a cancelled statement the same way
    d = pool.query("SELECT SLEEP(30), 'cancelled'", timeout=0)
    await sleep(0.2)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    assert (await pool.query("SELECT 'after cancel'")).scalar() == "after cancel"
    # statements queued in the pool behind a running one: one cancelled while it waits, one
    # refused for its arguments, one started and then cancelled; the connection serves on
    # (a text query, then a statement that is prepared first, both cancelled once running)
    for start in (
        lambda: pool.query("SELECT SLEEP(30), %s", ("started",), timeout=0),
        lambda: pool.execute("SELECT SLEEP(30), ?", ("started",), timeout=0),
    ):
        first = pool.query("SELECT SLEEP(0.3), 'first'")
        waiting = pool.query("SELECT 'never sent'")
        refused = pool.query("SELECT %s", (object(),))
        started = start()
        waiting.cancel()
        assert (await first)[0][1] == "first"
        with pytest.raises(TypeError, match="cannot escape"):
            await refused
        await sleep(0.2)
        started.cancel()
        with pytest.raises(defer.CancelledError):
            await waiting
        with pytest.raises(defer.CancelledError):
            await started
        assert (await pool.execute("SELECT ?", ("served",))) == [("served",)]
        assert list(pool.connections) == [conn]
    with pytest.raises(MySQLAcquireTimeoutError, match="acquire_timeout=0.2s"):
        busy = pools(size=1, acquire_timeout=0.2, query_timeout=5)
        slow = busy.query("SELECT SLEEP(1)")
        try:
            await busy.query("SELECT 1")
        finally:
            await slow


@pytest_twisted.ensureDeferred
async def test_transactions_commit_roll_back_and_never_come_back_open(pools: Any) -> None:
    pool = pools(size=2)
    await pool.query("DROP TABLE IF EXISTS acct")
    await pool.query("CREATE TABLE acct (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
    await pool.query("INSERT INTO acct VALUES (1, 100)")
    async with pool.transaction() as tx:
        await tx.query("UPDATE acct SET n = n - 10 WHERE id = 1")
        await tx.execute("UPDATE acct SET n = n - ? WHERE id = 1", (5,))
    assert (await pool.query("SELECT n FROM acct")).scalar() == 85
    with pytest.raises(ZeroDivisionError):
        async with pool.transaction() as tx:
            await tx.query("UPDATE acct SET n = 0 WHERE id = 1")
            1 / 0  # noqa: B018
    assert (await pool.query("SELECT n FROM acct")).scalar() == 85
    async with pool.connection() as conn:  # left open by hand: closed, not reused
        await conn.query("BEGIN")
        await conn.query("UPDATE acct SET n = 1 WHERE id = 1")
        assert conn.inTransaction
    assert conn.closedReason is not None
    assert (await pool.query("SELECT n FROM acct")).scalar() == 85
    with pytest.raises(MySQLServerError, match="1213|1205"):  # a lock wait ends the same way
        async with pool.transaction() as tx:
            await tx.query("SET SESSION innodb_lock_wait_timeout = 1")
            await tx.query("SELECT n FROM acct WHERE id = 1 FOR UPDATE")
            async with pools().transaction() as other:
                await other.query("SET SESSION innodb_lock_wait_timeout = 1")
                await other.query("UPDATE acct SET n = 2 WHERE id = 1")


@pytest_twisted.ensureDeferred
async def test_killing_the_server_under_20_callers(own_mariadb: Any) -> None:
    pool = MySQLPool(port=own_mariadb.port, user=USER, password=PASSWORD, database=DATABASE,
                     size=10, query_timeout=5, connect_timeout=2, acquire_timeout=5)  # fmt: skip
    try:
        stop = [False]
        wrong: list[Any] = []
        errors: list[str] = []
        ok = [0]

        async def caller(n: int) -> None:
            while not stop[0]:
                tag = random.randrange(1 << 30)
                try:
                    r = await pool.query("SELECT %s, %s", (n, tag))
                except (MySQLConnectionError, MySQLTimeoutError) as e:
                    errors.append(type(e).__name__)
                    await sleep(0.05)
                    continue
                if r.one() != (n, tag):
                    wrong.append((n, tag, r.one()))
                ok[0] += 1

        callers = [defer.ensureDeferred(caller(n)) for n in range(20)]
        while ok[0] < 500:
            await sleep(0.05)
        own_mariadb.stop()
        before = ok[0]
        while len(errors) < 20:
            await sleep(0.05)
        assert ok[0] - before < 50  # nothing answers while the server is gone
        own_mariadb.start()
        target = ok[0] + 500
        deadline = reactor.seconds() + 30
        while ok[0] < target:
            assert reactor.seconds() < deadline, f"the pool did not recover: {errors[-3:]}"
            await sleep(0.05)
        stop[0] = True
        await defer.gatherResults(callers)  # no caller hangs
        assert wrong == []
        assert len(pool.connections) <= 10
    finally:
        await pool.close()
    with pytest.raises(MySQLPoolClosedError):
        await pool.query("SELECT 1")


@pytest.mark.timeout(120)
def test_mysql_users_example_reads_writes_and_survives_an_outage(
    own_mariadb: Any, tmp_path: Any
) -> None:
    """The example through two workers: create, list, show, 409, 404; 503 while the database
    is down, and back by itself."""
    import http.client
    import time
    import urllib.parse

    from .support import EXAMPLES, Twistd, write_config

    env = {"MYSQL_PORT": str(own_mariadb.port), "MYSQL_USER": USER,
           "MYSQL_PASSWORD": PASSWORD, "MYSQL_DATABASE": DATABASE}  # fmt: skip
    os.environ.update(env)
    try:
        cfg = write_config(
            tmp_path, {"type": "http", "port": 0, "app": "mysql_users:handler"},
            {"worker_num": 2}, {"worker_start": "mysql_users:on_worker_start",
                                "worker_stop": "mysql_users:on_worker_stop"},
        )  # fmt: skip
        with Twistd(cfg, cwd=EXAMPLES) as server:
            port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
            server.wait_for(rb"ready", count=2)

            def call(method: str, path: str, form: dict[str, str] | None = None,
                     ) -> tuple[int, Any]:  # fmt: skip
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                body = urllib.parse.urlencode(form) if form else None
                headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
                conn.request(method, path, body, headers)
                r = conn.getresponse()
                return r.status, json.loads(r.read())

            deadline = time.monotonic() + 20  # worker 0 creates the table
            while call("GET", "/users")[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            status, ada = call("POST", "/users", {"name": "Ada ☃", "email": "ada@example.com"})
            assert status == 201 and ada["name"] == "Ada ☃"
            assert call("POST", "/users", {"name": "Ada", "email": "ada@example.com"})[0] == 409
            for _ in range(4):  # both workers answer the same
                status, users = call("GET", "/users")
                assert status == 200 and [u["email"] for u in users] == ["ada@example.com"]
                assert call("GET", f"/users/{ada['id']}")[1]["name"] == "Ada ☃"
            assert call("GET", "/users/999")[0] == 404
            own_mariadb.stop()
            status, body = call("GET", "/users")
            assert status == 503 and f"127.0.0.1:{own_mariadb.port}" in body["error"]
            own_mariadb.start()
            deadline = time.monotonic() + 30
            streak = 0
            while time.monotonic() < deadline and streak < 6:
                streak = streak + 1 if call("GET", "/users")[0] == 200 else 0
                time.sleep(0.1)
            assert streak == 6
            assert server.stop() == 0
    finally:
        for key in env:
            del os.environ[key]


@pytest_twisted.ensureDeferred
async def test_health_checks_idle_eviction_and_close_with_statements_queued(pools: Any) -> None:
    admin = pools(size=1, health_check_interval=0)

    async def pings() -> int:  # COM_PING counts as an admin command
        r = await admin.query("SHOW GLOBAL STATUS LIKE 'Com_admin_commands'")
        return int(r.one()[1])  # type: ignore[index]

    before = await pings()
    pool = pools(size=1, health_check_interval=0.2, idle_timeout=1.5, query_timeout=2)
    await pool.query("SELECT 1")
    [conn] = list(pool.connections)
    deadline = reactor.seconds() + 15
    while await pings() == before:  # pinged while idle
        assert reactor.seconds() < deadline, "no health check"
        await sleep(0.05)
    while pool.connections:  # and still closed once idle past idle_timeout: pings are no use
        assert reactor.seconds() < deadline, "pinged connections were never evicted"
        await sleep(0.05)
    assert conn.closedReason is not None and "idle connection closed" in str(conn.closedReason)
    assert (await pool.query("SELECT 2")).scalar() == 2  # a new one, made on demand
    running = pool.query("SELECT SLEEP(0.3)")
    queued = pool.query("SELECT 3")  # waits for the only connection
    await pool.close()
    with pytest.raises(MySQLPoolClosedError):
        await queued
    with pytest.raises((MySQLPoolClosedError, MySQLConnectionError)):
        await running
