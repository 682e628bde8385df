"""The TechEmpower test types on twisted.web with PyMySQL in ``adbapi`` threads (a peer in
run.py): ``python peer_twisted.py PORT``."""

import json
import random
import sys

from twisted.enterprise import adbapi
from twisted.internet import defer, reactor
from twisted.web import resource, server
from world import WORLDS, database, fortunes_html, query_count

WORLD = "SELECT id, randomNumber FROM World WHERE id = %s"
where = database()
size = where.pop("size")
reactor.suggestThreadPoolSize(size)
pool = adbapi.ConnectionPool("pymysql", cp_min=1, cp_max=size, autocommit=True, **where)


def worlds_in(txn, n, update):
    worlds = []
    for _ in range(n):
        txn.execute(WORLD, (random.randint(1, WORLDS),))
        i, r = txn.fetchone()
        worlds.append({"id": i, "randomNumber": r})
    if update:
        for w in worlds:
            w["randomNumber"] = random.randint(1, WORLDS)
        todo = sorted({w["id"]: w["randomNumber"] for w in worlds}.items())
        txn.executemany(
            "UPDATE World SET randomNumber = %s WHERE id = %s", [(r, i) for i, r in todo]
        )
    return worlds


class Root(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        path = request.path
        if path == b"/plaintext":
            request.setHeader(b"content-type", b"text/plain")
            return b"Hello, World!"
        if path == b"/json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"message": "Hello, World!"}).encode()
        d = defer.ensureDeferred(self.database(request, path))
        d.addErrback(lambda f: (request.setResponseCode(500), request.write(str(f.value).encode())))
        d.addBoth(lambda _: self.finish(request))
        return server.NOT_DONE_YET

    @staticmethod
    def finish(request):
        if not request.finished and not request._disconnected:  # the client may have gone
            request.finish()

    async def database(self, request, path):
        if path == b"/fortunes":
            rows = await pool.runQuery("SELECT id, message FROM Fortune")
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.write(fortunes_html([tuple(r) for r in rows]).encode())
            return
        if path == b"/db":
            body = (await pool.runInteraction(worlds_in, 1, False))[0]
        elif path in (b"/queries", b"/updates"):
            raw = (request.args.get(b"queries") or [b""])[0].decode()
            body = await pool.runInteraction(worlds_in, query_count(raw), path == b"/updates")
        else:
            request.setResponseCode(404)
            return
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body).encode())


if __name__ == "__main__":
    site = server.Site(Root())
    site.noisy = False
    site.log = lambda request: None
    reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
    reactor.run()
