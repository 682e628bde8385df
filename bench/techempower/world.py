"""The TechEmpower database: the ``World`` table (10,000 rows) and the ``Fortune`` table (the
12 standard rows), loaded into MySQL/MariaDB, and the same worlds into Redis hashes, plus the
checks of every test type's answer (used by ``tests/test_techempower.py`` and ``run.py``)."""

from __future__ import annotations

import html
import json
import os
import random
from typing import Any

WORLDS = 10_000
FORTUNES = [
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren't broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. \u2014 Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    '<script>alert("This should not be displayed in a browser alert box.");</script>',
    "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af",
]
ADDED = "Additional fortune added at request time."


def database() -> dict[str, Any]:
    """Where the database is, from ``MYSQL_HOST``, ``MYSQL_PORT``, ``MYSQL_USER``,
    ``MYSQL_PASSWORD``, ``MYSQL_DATABASE``, and the pool size from ``POOL_SIZE``."""
    env = os.environ.get
    return {"host": env("MYSQL_HOST", "127.0.0.1"), "port": int(env("MYSQL_PORT", "3306")),
            "user": env("MYSQL_USER", "root"), "password": env("MYSQL_PASSWORD", ""),
            "database": env("MYSQL_DATABASE", "test"),
            "size": int(env("POOL_SIZE", "16"))}  # fmt: skip


def schema_sql(seed: int = 1) -> str:
    """SQL that (re)creates both tables with their rows."""
    rng = random.Random(seed)
    worlds = ",".join(f"({i},{rng.randint(1, WORLDS)})" for i in range(1, WORLDS + 1))
    fortunes = ",".join(
        f"({i},'{m.replace(chr(92), chr(92) * 2).replace(chr(39), chr(39) * 2)}')"
        for i, m in enumerate(FORTUNES, 1)
    )
    return (
        "DROP TABLE IF EXISTS World; DROP TABLE IF EXISTS Fortune;"
        "CREATE TABLE World (id INT NOT NULL PRIMARY KEY, randomNumber INT NOT NULL DEFAULT 0)"
        " ENGINE=InnoDB;"
        "CREATE TABLE Fortune (id INT NOT NULL PRIMARY KEY, message VARCHAR(2048) NOT NULL)"
        " ENGINE=InnoDB CHARACTER SET utf8mb4;"
        f"INSERT INTO World VALUES {worlds};"
        f"INSERT INTO Fortune VALUES {fortunes};"
    )


def fortunes_html(rows: list[tuple[int, str]]) -> str:
    """The fortunes page of the spec for ``rows`` (the added one and the sort are done here)."""
    rows = sorted([*rows, (0, ADDED)], key=lambda r: r[1])
    cells = "".join(f"<tr><td>{i}</td><td>{html.escape(m, quote=True)}</td></tr>" for i, m in rows)
    return (
        "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
        f"<tr><th>id</th><th>message</th></tr>{cells}</table></body></html>"
    )


def query_count(raw: str | None) -> int:
    """The ``queries`` parameter as the spec reads it: not an integer or below 1 is 1, above
    500 is 500."""
    try:
        n = int(raw or "")
    except ValueError:
        return 1
    return min(max(n, 1), 500)


# -- the checks ----------------------------------------------------------------------------------
def check_headers(headers: Any, content_type: str) -> list[str]:
    """What is wrong with a response's headers for the spec ('' list: nothing)."""
    problems = []
    for name in ("Server", "Date"):
        if not headers.get(name):
            problems.append(f"no {name} header")
    if not (headers.get("Content-Length") or headers.get("Transfer-Encoding")):
        problems.append("neither Content-Length nor Transfer-Encoding")
    got = (headers.get("Content-Type") or "").replace(" ", "").lower()
    if got != content_type.replace(" ", "").lower():
        problems.append(f"Content-Type {got!r}, expected {content_type!r}")
    return problems


def check_world(obj: Any) -> list[str]:
    if not isinstance(obj, dict) or set(obj) != {"id", "randomNumber"}:
        return [f"not a world object: {obj!r}"]
    problems = []
    for key in ("id", "randomNumber"):
        v = obj[key]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= WORLDS:
            problems.append(f"{key} {v!r} is not an integer in 1..{WORLDS}")
    return problems


def check_worlds(body: bytes, count: int) -> list[str]:
    items = json.loads(body)
    if not isinstance(items, list) or len(items) != count:
        return [f"expected a JSON array of {count} worlds, got {body[:80]!r}"]
    return [p for item in items for p in check_world(item)]
