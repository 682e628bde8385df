"""The TechEmpower test types as a raw ASGI app on uvicorn with aiomysql (a peer in run.py):
``uvicorn peer_asgi:app --port P --workers 1 --loop uvloop --http httptools``."""

import json
import random
from urllib.parse import parse_qs

import aiomysql
from world import WORLDS, database, fortunes_html, query_count

pool = None
WORLD = "SELECT id, randomNumber FROM World WHERE id = %s"


async def get_pool():
    global pool
    if pool is None:
        where = database()
        pool = await aiomysql.create_pool(
            host=where["host"], port=where["port"], user=where["user"],
            password=where["password"], db=where["database"], minsize=1,
            maxsize=where["size"], autocommit=True,
        )  # fmt: skip
    return pool


async def world(p):
    async with p.acquire() as conn, conn.cursor() as cur:
        await cur.execute(WORLD, (random.randint(1, WORLDS),))
        i, n = await cur.fetchone()
    return {"id": i, "randomNumber": n}


async def send(send_, body, content_type):
    await send_(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send_({"type": "http.response.body", "body": body})


async def app(scope, receive, send_):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/plaintext":
        return await send(send_, b"Hello, World!", b"text/plain")
    if path == "/json":
        return await send(
            send_, json.dumps({"message": "Hello, World!"}).encode(), b"application/json"
        )
    qs = parse_qs(scope["query_string"].decode())
    p = await get_pool()
    if path == "/db":
        return await send(send_, json.dumps(await world(p)).encode(), b"application/json")
    if path in ("/queries", "/updates"):
        n = query_count((qs.get("queries") or [None])[0])
        async with p.acquire() as conn, conn.cursor() as cur:
            worlds = []
            for _ in range(n):
                await cur.execute(WORLD, (random.randint(1, WORLDS),))
                i, r = await cur.fetchone()
                worlds.append({"id": i, "randomNumber": r})
            if path == "/updates":
                for w in worlds:
                    w["randomNumber"] = random.randint(1, WORLDS)
                todo = sorted({w["id"]: w["randomNumber"] for w in worlds}.items())
                await cur.executemany(
                    "UPDATE World SET randomNumber = %s WHERE id = %s", [(r, i) for i, r in todo]
                )
        return await send(send_, json.dumps(worlds).encode(), b"application/json")
    if path == "/fortunes":
        async with p.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT id, message FROM Fortune")
            rows = list(await cur.fetchall())
        return await send(send_, fortunes_html(rows).encode(), b"text/html; charset=utf-8")
    await send_({"type": "http.response.start", "status": 404, "headers": []})
    await send_({"type": "http.response.body", "body": b"not found"})
