"""The TechEmpower test types of ``bench/techempower`` answer as the benchmark's rules say:
headers, JSON shapes, the ``queries`` parameter's bounds, escaping and sorting of fortunes,
updates that persist, single query from Redis; through a real ``twistd swoole`` on a private
MariaDB and Redis."""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .mysql_server import PASSWORD, USER
from .support import Twistd, write_config

HERE = Path(__file__).resolve().parent.parent / "bench" / "techempower"
sys.path.insert(0, str(HERE))
from world import (  # noqa: E402
    ADDED,
    FORTUNES,
    WORLDS,
    check_headers,
    check_world,
    check_worlds,
    schema_sql,
)

pytestmark = pytest.mark.integration
SCRIPT = '<script>alert("This should not be displayed in a browser alert box.");</script>'


def mariadb_cli(server: Any, *args: str, sql: str = "") -> str:
    return subprocess.run(["mariadb", "-N", "-h127.0.0.1", f"-P{server.port}", f"-u{USER}",
                           f"-p{PASSWORD}", *args], input=sql.encode(), capture_output=True,
                          check=True).stdout.decode()  # fmt: skip


@pytest.fixture(scope="module")
def app(mariadb: Any, redis_server: Any, tmp_path_factory: Any) -> Any:
    mariadb_cli(mariadb, sql="DROP DATABASE IF EXISTS tfb; CREATE DATABASE tfb "
                             "CHARACTER SET utf8mb4;")  # fmt: skip
    mariadb_cli(mariadb, "tfb", sql=schema_sql())
    worlds = dict(
        line.split("\t") for line in mariadb_cli(mariadb, "tfb", "-e",
                                                 "SELECT id, randomNumber FROM World").split("\n")
        if line
    )  # fmt: skip
    pairs = " ".join(f"world:{i} {n}" for i, n in worlds.items())
    subprocess.run(["redis-cli", "-p", str(redis_server.port)], input=f"MSET {pairs}\n".encode(),
                   check=True, capture_output=True)  # fmt: skip
    tmp = tmp_path_factory.mktemp("tfb")
    cfg = write_config(tmp, {"type": "http", "port": 0, "app": "app:handler"}, {"worker_num": 1},
                       {"worker_start": "app:on_worker_start",
                        "worker_stop": "app:on_worker_stop"})  # fmt: skip
    env = {"MYSQL_PORT": str(mariadb.port), "MYSQL_USER": USER, "MYSQL_PASSWORD": PASSWORD,
           "MYSQL_DATABASE": "tfb", "REDIS_PORT": str(redis_server.port),
           "MYSQL_PIPELINE": "4"}  # fmt: skip
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with Twistd(cfg, cwd=HERE) as server:
            port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
            server.wait_for(rb"ready")
            yield port, mariadb
    finally:
        os.environ.clear()
        os.environ.update(saved)


def get(port: int, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (path, r.status, body[:200])
    return r, body


def test_plaintext_and_json_with_their_headers_and_pipelining(app: Any) -> None:
    port, _ = app
    r, body = get(port, "/plaintext")
    assert body == b"Hello, World!" and check_headers(r.headers, "text/plain") == []
    r, body = get(port, "/json")
    assert json.loads(body) == {"message": "Hello, World!"}
    assert check_headers(r.headers, "application/json") == []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # 16 deep, as wrk
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n" * 16)
        data = b""
        while data.count(b"Hello, World!") < 16:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 16


def test_single_and_multiple_queries_with_the_parameter_bounds(app: Any) -> None:
    port, _ = app
    r, body = get(port, "/db")
    assert (
        check_world(json.loads(body)) == [] and check_headers(r.headers, "application/json") == []
    )
    for raw, count in (("20", 20), ("1", 1), ("0", 1), ("-3", 1), ("foo", 1), ("", 1),
                       ("500", 500), ("501", 500)):  # fmt: skip
        r, body = get(port, f"/queries?queries={raw}")
        assert check_worlds(body, count) == [], raw
    assert check_worlds(get(port, "/queries")[1], 1) == []


def test_fortunes_escaped_sorted_with_the_added_one(app: Any) -> None:
    port, _ = app
    r, body = get(port, "/fortunes")
    assert check_headers(r.headers, "text/html; charset=utf-8") == []
    page = body.decode("utf-8")
    assert page.startswith("<!DOCTYPE html><html><head><title>Fortunes</title></head><body>"
                           "<table><tr><th>id</th><th>message</th></tr>")  # fmt: skip
    assert page.endswith("</table></body></html>")
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", page)
    messages = [html.unescape(m) for _, m in rows]
    assert sorted(messages) == messages and len(rows) == len(FORTUNES) + 1
    ids = {m: int(i) for (i, _), m in zip(rows, messages, strict=True)}
    assert ids[ADDED] == 0
    assert set(messages) == {*FORTUNES, ADDED}
    assert SCRIPT not in page and html.escape(SCRIPT) in page  # escaped, quotes too
    assert (
        "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af"
        in page
    )


def test_updates_persist_and_redis_single_query(app: Any) -> None:
    port, mariadb = app
    for raw, count in (("5", 5), ("0", 1), ("501", 500)):
        r, body = get(port, f"/updates?queries={raw}")
        worlds = json.loads(body)
        assert (
            check_worlds(body, count) == [] and check_headers(r.headers, "application/json") == []
        )
        last = {w["id"]: w["randomNumber"] for w in worlds}  # (an id drawn twice: the last)
        ids = ",".join(map(str, last))
        stored = dict(
            tuple(map(int, line.split("\t")))
            for line in mariadb_cli(mariadb, "tfb", "-e",
                                    f"SELECT id, randomNumber FROM World WHERE id IN ({ids})"
                                    ).split("\n") if line
        )  # fmt: skip
        assert stored == last
    for _ in range(20):
        r, body = get(port, "/redis/db")
        world = json.loads(body)
        assert check_world(world) == [] and 1 <= world["id"] <= WORLDS
