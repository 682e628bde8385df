"""The six TechEmpower test types (and single query from Redis) on tx_swoole.

``twistd -n swoole -c bench/techempower/app.toml`` with the database named by ``MYSQL_HOST``,
``MYSQL_PORT``, ``MYSQL_USER``, ``MYSQL_PASSWORD``, ``MYSQL_DATABASE`` and Redis by
``REDIS_PORT``; ``run.py`` starts both and loads them (``world.py``).  Routes: ``/plaintext``,
``/json``, ``/db``, ``/queries?queries=N``, ``/fortunes``, ``/updates?queries=N``,
``/redis/db``.  Each worker makes its pools in ``on_worker_start``.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from twisted.internet import defer
from world import WORLDS, database, fortunes_html, query_count  # type: ignore[import-not-found]

from tx_swoole.clients.mysql import MySQLPool
from tx_swoole.clients.redis import RedisPool
from tx_swoole.protocols.http import Request, Response

db: MySQLPool | None = None
redis: RedisPool | None = None
WORLD = "SELECT id, randomNumber FROM World WHERE id = ?"
PLAIN = b"Hello, World!"
randint = random.randint
dumps = json.dumps


async def on_worker_start(server: Any, worker_id: int) -> None:
    global db, redis
    where = database()
    pipeline = int(os.environ.get("MYSQL_PIPELINE", "1"))  # statements in flight per connection
    db = MySQLPool(where.pop("host"), where.pop("port"), pipeline=pipeline, **where)
    redis = RedisPool(port=int(os.environ.get("REDIS_PORT", "6379")), size=4)


async def on_worker_stop(server: Any, worker_id: int) -> None:
    if db is not None:
        await db.close()


def _json(response: Response, body: Any) -> None:
    response.header("Content-Type", "application/json")
    response.end(dumps(body))


async def _world(pool: MySQLPool) -> dict[str, int]:
    row = (await pool.execute(WORLD, (randint(1, WORLDS),)))[0]
    return {"id": row[0], "randomNumber": row[1]}


async def _worlds(pool: MySQLPool, n: int) -> list[dict[str, int]]:
    """``n`` random worlds, the queries all sent at once (the pool queues them)."""
    results = await defer.gatherResults([pool.execute(WORLD, (randint(1, WORLDS),))
                                         for _ in range(n)])  # fmt: skip
    return [{"id": r[0][0], "randomNumber": r[0][1]} for r in results]


def handler(request: Request, response: Response) -> Any:
    """Plaintext and JSON answer at once (a plain handler costs no coroutine); the database
    routes return the coroutine of :func:`from_database`, which the server awaits."""
    path = request.path
    if path == "/plaintext":
        response.header("Content-Type", "text/plain")
        response.end(PLAIN)
        return None
    if path == "/json":
        _json(response, {"message": "Hello, World!"})
        return None
    return from_database(path, request, response)


async def from_database(path: str, request: Request, response: Response) -> None:
    assert db is not None and redis is not None
    if path == "/db":
        _json(response, await _world(db))
    elif path == "/queries":
        n = query_count(request.arg("queries"))
        _json(response, await _worlds(db, n))
    elif path == "/fortunes":
        rows = await db.execute("SELECT id, message FROM Fortune")
        response.header("Content-Type", "text/html; charset=utf-8")
        response.end(fortunes_html(list(rows)))
    elif path == "/updates":
        n = query_count(request.arg("queries"))
        worlds = await _worlds(db, n)
        for w in worlds:
            w["randomNumber"] = randint(1, WORLDS)
        todo = sorted({w["id"]: w["randomNumber"] for w in worlds}.items())  # (a lock order)
        sql = ("UPDATE World SET randomNumber = CASE id" + " WHEN %s THEN %s" * len(todo)
               + " END WHERE id IN (" + ",".join(["%s"] * len(todo)) + ")")  # fmt: skip
        await db.query(sql, [v for pair in todo for v in pair] + [i for i, _ in todo])
        _json(response, worlds)
    elif path == "/redis/db":
        i = randint(1, WORLDS)
        _json(response, {"id": i, "randomNumber": int(await redis.get(b"world:%d" % i))})
    else:
        response.status(404)
        response.end(b"not found")
