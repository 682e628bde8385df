"""Primary-key SELECTs and a 10,000-row result: our MySQLPool vs aiomysql, asyncmy, PyMySQL in
``twisted.enterprise.adbapi``, and ``mariadb-slap`` (MariaDB's C client) as the ceiling.

``python bench/mysql_clients.py [N] [ROUNDS]`` starts a private MariaDB (as the tests do),
fills a table of 1,000 rows and one of 10,000, and runs each client in a fresh process: N
primary-key SELECTs from 50 concurrent callers over a pool of 10 connections, then the
10,000-row SELECT 20 times (rows/s).  Clients alternate (A B C ...) for ROUNDS rounds; prints
the medians and the ratios.  The peers run from ``/tmp/mysql-peers`` (``python3 -m venv
/tmp/mysql-peers && /tmp/mysql-peers/bin/pip install aiomysql asyncmy pymysql twisted``).
Ours runs three ways: text queries, prepared statements, and prepared with ``pipeline=16``.
``mariadb-slap`` (no pool) runs with 50 connections, the callers' concurrency, and with 10, the
pools' size: the higher is the ceiling the server sets for this query.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
from tests.mysql_server import DATABASE, PASSWORD, USER, MariaDB  # noqa: E402

PEER_PY = "/tmp/mysql-peers/bin/python"
PK = "SELECT v FROM kv WHERE id = %s"
BIG = "SELECT id, v, n FROM big"
COMMON = r"""
import random, sys, time
N, PORT = int(sys.argv[1]), int(sys.argv[2])
C, P, BIG_REPEAT = 50, 10, 20
ARGS = dict(user="tx", password="secret", database="txdb")
def report(name, pk_seconds, big_seconds, rows):
    print(f"{name} pk {N / pk_seconds:.0f} rows {rows * BIG_REPEAT / big_seconds:.0f}")
"""
OURS = (
    COMMON
    + r"""
from twisted.internet import defer, task
from tx_swoole.clients.mysql import MySQLPool
PREPARED = "prepared" in sys.argv[3:]
PIPELINE = 16 if "pipeline" in sys.argv[3:] else 1
async def main(reactor):
    pool = MySQLPool(port=PORT, size=P, pipeline=PIPELINE, **ARGS)
    run = pool.execute if PREPARED else pool.query
    sql = "SELECT v FROM kv WHERE id = " + ("?" if PREPARED else "%s")
    await defer.gatherResults([defer.ensureDeferred(run(sql, (1,))) for _ in range(P)])
    async def caller(n):
        for _ in range(n):
            (await run(sql, (random.randint(1, 1000),))).rows
    t = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(caller(N // C)) for _ in range(C)])
    pk = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(BIG_REPEAT):
        rows = len((await run("SELECT id, v, n FROM big", ())).rows)
    name = "tx_swoole" + (" prepared" if PREPARED else "")
    name += " pipeline=16" if PIPELINE > 1 else ""
    report(name, pk, time.perf_counter() - t, rows)
    await pool.close()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""
)
AIOMYSQL = (
    COMMON
    + r"""
import asyncio, aiomysql
async def main():
    pool = await aiomysql.create_pool(port=PORT, host="127.0.0.1", minsize=P, maxsize=P,
                                      db=ARGS["database"], user=ARGS["user"],
                                      password=ARGS["password"])
    async def one(i):
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT v FROM kv WHERE id = %s", (i,))
                return await cur.fetchall()
    async def caller(n):
        for _ in range(n):
            await one(random.randint(1, 1000))
    t = time.perf_counter()
    await asyncio.gather(*[caller(N // C) for _ in range(C)])
    pk = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(BIG_REPEAT):
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT id, v, n FROM big")
                rows = len(await cur.fetchall())
    report("aiomysql", pk, time.perf_counter() - t, rows)
    pool.close()
    await pool.wait_closed()
asyncio.run(main())
"""
)
ASYNCMY = AIOMYSQL.replace("import asyncio, aiomysql", "import asyncio, asyncmy as aiomysql"
                           ).replace('report("aiomysql"', 'report("asyncmy"')  # fmt: skip
ADBAPI = (
    COMMON
    + r"""
from twisted.internet import defer, task
from twisted.enterprise import adbapi
async def main(reactor):
    reactor.suggestThreadPoolSize(P)
    pool = adbapi.ConnectionPool("pymysql", host="127.0.0.1", port=PORT, cp_min=P, cp_max=P,
                                 **ARGS)
    async def caller(n):
        for _ in range(n):
            await pool.runQuery("SELECT v FROM kv WHERE id = %s", (random.randint(1, 1000),))
    t = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(caller(N // C)) for _ in range(C)])
    pk = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(BIG_REPEAT):
        rows = len(await pool.runQuery("SELECT id, v, n FROM big"))
    report("pymysql+adbapi", pk, time.perf_counter() - t, rows)
    pool.close()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""
)


def fill(server: MariaDB) -> None:
    sql = (f"USE {DATABASE}; DROP TABLE IF EXISTS kv; DROP TABLE IF EXISTS big;"
           "CREATE TABLE kv (id INT PRIMARY KEY, v VARCHAR(64));"
           "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(64), n DOUBLE);"
           "INSERT INTO kv SELECT seq, CONCAT('value-', seq) FROM seq_1_to_1000;"
           "INSERT INTO big SELECT seq, CONCAT('row-', seq), seq / 7 "
           "FROM seq_1_to_10000;")  # fmt: skip
    subprocess.run(["mariadb", "-h127.0.0.1", f"-P{server.port}", f"-u{USER}",
                    f"-p{PASSWORD}", "-e", sql], check=True)  # fmt: skip


def slap(server: MariaDB, n: int, concurrency: int) -> float:
    out = subprocess.run(
        ["mariadb-slap", "-h127.0.0.1", f"-P{server.port}", f"-u{USER}", f"-p{PASSWORD}",
         f"--concurrency={concurrency}", "--iterations=1", f"--number-of-queries={n}",
         f"--create-schema={DATABASE}", "--query=SELECT v FROM kv WHERE id = 500"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    seconds = float(re.search(r"Average number of seconds to run all queries: ([\d.]+)", out)
                    .group(1))  # type: ignore[union-attr]  # fmt: skip
    return n / seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    clients = [("tx_swoole", sys.executable, OURS, []),
               ("tx_swoole prepared", sys.executable, OURS, ["prepared"]),
               ("tx_swoole prepared pipeline=16", sys.executable, OURS, ["prepared", "pipeline"]),
               ("aiomysql", PEER_PY, AIOMYSQL, []), ("asyncmy", PEER_PY, ASYNCMY, []),
               ("pymysql+adbapi", PEER_PY, ADBAPI, [])]  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in clients}
    results["mariadb-slap -c50"] = []
    results["mariadb-slap -c10"] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = MariaDB(Path(tmp))
        server.start()
        try:
            fill(server)
            for _ in range(rounds):
                for name, python, code, extra in clients:
                    out = subprocess.run([python, "-c", code, str(n), str(server.port), *extra],
                                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
                    m = re.search(r" pk (\d+) rows (\d+)", out.stdout)
                    if not m:
                        print(f"{name} failed: {out.stderr[-500:]}")
                        continue
                    results[name].append((float(m.group(1)), float(m.group(2))))
                    print(out.stdout.strip())
                    time.sleep(0.2)
                for c in (50, 10):
                    results[f"mariadb-slap -c{c}"].append((slap(server, n, c), 0.0))
                    print(f"mariadb-slap -c{c} pk {results[f'mariadb-slap -c{c}'][-1][0]:.0f}")
        finally:
            server.stop()
    medians = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
               for k, v in results.items() if v}  # fmt: skip
    ours_pk, ours_rows = medians["tx_swoole"]
    print(f"\nmedians of {rounds} rounds, {n} primary-key SELECTs, 50 callers, pool of 10:")
    for name, (pk, rows) in medians.items():
        line = f"  {name:30s} {pk:8.0f} q/s  (tx_swoole {ours_pk / pk:.2f}x)"
        if rows:
            line += f"   10,000-row result: {rows:9.0f} rows/s (tx_swoole {ours_rows / rows:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
