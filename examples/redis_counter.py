"""A per-path hit counter in Redis, served over HTTP by every worker.

Each worker creates its own pool in ``on_worker_start`` (connections are never shared across
processes) and closes it in ``on_worker_stop``.  When Redis is down the handler answers 503
with the reason and recovers by itself once Redis is back.  Redis address: environment
variables ``REDIS_HOST`` (127.0.0.1) and ``REDIS_PORT`` (6379).

Run it with ``twistd -n swoole -c examples/redis_counter.toml``, then ``curl 127.0.0.1:9505/a``.
"""

import os
from typing import Any

from tx_swoole.clients.redis import RedisPool
from tx_swoole.errors import RedisConnectionError, RedisTimeoutError
from tx_swoole.protocols.http import Request, Response

pool: RedisPool | None = None


def on_worker_start(server: Any, worker_id: int) -> None:
    """Create this worker's pool (lazy: it connects on first use)."""
    global pool
    pool = RedisPool(
        os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT", "6379")),
        size=10, connect_timeout=1.0, command_timeout=1.0,
    )  # fmt: skip


async def on_worker_stop(server: Any, worker_id: int) -> None:
    """Close this worker's connections."""
    if pool is not None:
        await pool.close()


async def handler(request: Request, response: Response) -> None:
    """INCR the counter of the request path and answer with its value."""
    assert pool is not None, "on_worker_start creates the pool"
    try:
        count = await pool.incr("hits:" + request.path)
    except (RedisConnectionError, RedisTimeoutError) as e:
        response.status(503)
        response.header("Content-Type", "text/plain")
        response.header("Retry-After", "1")
        response.end(f"counter unavailable: {e}\n")
        return
    response.header("Content-Type", "text/plain")
    response.end(f"{request.path} {count}\n")
