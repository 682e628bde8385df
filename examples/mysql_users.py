"""A users table in MySQL/MariaDB, read and written over HTTP by every worker.

Each worker creates its own pool in ``on_worker_start`` (connections are never shared across
processes) and closes it in ``on_worker_stop``; the first worker creates the table if it is
missing.  ``GET /users`` lists them, ``GET /users/ID`` shows one (404 if there is none),
``POST /users`` with a form ``name=...&email=...`` adds one (409 if the email is taken).
While the database is down the handler answers 503 with the reason and recovers by itself.
Database: environment variables ``MYSQL_HOST`` (127.0.0.1), ``MYSQL_PORT`` (3306),
``MYSQL_USER`` (root), ``MYSQL_PASSWORD`` (empty), ``MYSQL_DATABASE`` (test).

Run it with ``twistd -n swoole -c examples/mysql_users.toml``, then
``curl -d name=ada -d email=ada@example.com 127.0.0.1:9506/users``.
"""

import json
import os
from typing import Any

from tx_swoole.clients.mysql import MySQLPool
from tx_swoole.errors import MySQLConnectionError, MySQLServerError, MySQLTimeoutError
from tx_swoole.protocols.http import Request, Response

pool: MySQLPool | None = None
DUPLICATE_ENTRY = 1062
SCHEMA = """CREATE TABLE IF NOT EXISTS users (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    email VARCHAR(200) NOT NULL UNIQUE,
    created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) CHARACTER SET utf8mb4"""


async def on_worker_start(server: Any, worker_id: int) -> None:
    """Create this worker's pool (lazy: it connects on first use); worker 0 makes the table."""
    global pool
    pool = MySQLPool(
        os.environ.get("MYSQL_HOST", "127.0.0.1"), int(os.environ.get("MYSQL_PORT", "3306")),
        user=os.environ.get("MYSQL_USER", "root"), password=os.environ.get("MYSQL_PASSWORD", ""),
        database=os.environ.get("MYSQL_DATABASE", "test"), size=10, connect_timeout=1.0,
        query_timeout=5.0,
    )  # fmt: skip
    if worker_id == 0:
        try:
            await pool.query(SCHEMA)
        except (MySQLConnectionError, MySQLTimeoutError):
            pass  # the database is down: the handler says so (503) until it is back


async def on_worker_stop(server: Any, worker_id: int) -> None:
    """Close this worker's connections."""
    if pool is not None:
        await pool.close()


def answer(response: Response, status: int, body: Any) -> None:
    response.status(status)
    response.header("Content-Type", "application/json")
    response.end(json.dumps(body, default=str) + "\n")


async def handler(request: Request, response: Response) -> None:
    """The users API (see the module docstring)."""
    assert pool is not None, "on_worker_start creates the pool"
    parts = request.path.strip("/").split("/")
    try:
        if parts == ["users"] and request.method == "GET":
            r = await pool.query("SELECT id, name, email, created FROM users ORDER BY id")
            answer(response, 200, r.dicts())
        elif parts == ["users"] and request.method == "POST":
            form = request.form
            name, email = form.get("name", [""])[0], form.get("email", [""])[0]
            if not name or not email:
                answer(response, 400, {"error": "name and email are required"})
                return
            r = await pool.execute("INSERT INTO users (name, email) VALUES (?, ?)",
                                   (name, email))  # fmt: skip
            answer(response, 201, {"id": r.insert_id, "name": name, "email": email})
        elif len(parts) == 2 and parts[0] == "users" and parts[1].isdigit():
            r = await pool.execute("SELECT id, name, email, created FROM users WHERE id = ?",
                                   (int(parts[1]),))  # fmt: skip
            rows = r.dicts()
            answer(response, 200 if rows else 404, rows[0] if rows else {"error": "no such user"})
        else:
            answer(response, 404, {"error": "not found"})
    except MySQLServerError as e:
        if e.errno == DUPLICATE_ENTRY:
            answer(response, 409, {"error": "that email is taken"})
            return
        raise
    except (MySQLConnectionError, MySQLTimeoutError) as e:
        response.header("Retry-After", "1")
        answer(response, 503, {"error": f"database unavailable: {e}"})
