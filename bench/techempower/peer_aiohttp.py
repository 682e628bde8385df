"""The TechEmpower test types on aiohttp with aiomysql (a peer in run.py):
``python peer_aiohttp.py PORT``."""

import json
import random
import sys

import aiomysql
from aiohttp import web
from world import WORLDS, database, fortunes_html, query_count

WORLD = "SELECT id, randomNumber FROM World WHERE id = %s"


async def start(app):
    where = database()
    app["pool"] = await aiomysql.create_pool(
        host=where["host"], port=where["port"], user=where["user"],
        password=where["password"], db=where["database"], minsize=1,
        maxsize=where["size"], autocommit=True,
    )  # fmt: skip


def as_json(body):
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def plaintext(request):
    return web.Response(body=b"Hello, World!", content_type="text/plain")


async def json_(request):
    return as_json({"message": "Hello, World!"})


async def db(request):
    async with request.app["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(WORLD, (random.randint(1, WORLDS),))
        i, n = await cur.fetchone()
    return as_json({"id": i, "randomNumber": n})


async def queries(request, update=False):
    n = query_count(request.query.get("queries"))
    async with request.app["pool"].acquire() as conn, conn.cursor() as cur:
        worlds = []
        for _ in range(n):
            await cur.execute(WORLD, (random.randint(1, WORLDS),))
            i, r = await cur.fetchone()
            worlds.append({"id": i, "randomNumber": r})
        if update:
            for w in worlds:
                w["randomNumber"] = random.randint(1, WORLDS)
            todo = sorted({w["id"]: w["randomNumber"] for w in worlds}.items())
            await cur.executemany(
                "UPDATE World SET randomNumber = %s WHERE id = %s", [(r, i) for i, r in todo]
            )
    return as_json(worlds)


async def updates(request):
    return await queries(request, True)


async def fortunes(request):
    async with request.app["pool"].acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT id, message FROM Fortune")
        rows = list(await cur.fetchall())
    return web.Response(
        body=fortunes_html(rows).encode(), content_type="text/html", charset="utf-8"
    )


app = web.Application()
app.on_startup.append(start)
app.router.add_get("/plaintext", plaintext)
app.router.add_get("/json", json_)
app.router.add_get("/db", db)
app.router.add_get("/queries", queries)
app.router.add_get("/updates", updates)
app.router.add_get("/fortunes", fortunes)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
