from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted

from tests.mysql_server import DATABASE, PASSWORD, USER, mariadb, own_mariadb  # noqa: F401  (fixtures)
from tests.redis_server import own_redis, redis_server  # noqa: F401  (fixtures)
from tx_swoole.clients.mysql import MySQLPool


@pytest_twisted.async_yield_fixture
async def pools(mariadb: Any) -> AsyncIterator[Callable[..., MySQLPool]]:  # noqa: F811
    """``pools(**kwargs)`` makes a MySQLPool on the session's MariaDB; all closed after."""
    made: list[MySQLPool] = []

    def make(**kwargs: Any) -> MySQLPool:
        kwargs.setdefault("port", mariadb.port)
        kwargs.setdefault("user", USER)
        kwargs.setdefault("password", PASSWORD)
        kwargs.setdefault("database", DATABASE)
        pool = MySQLPool(**kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()
