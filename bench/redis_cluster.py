"""Redis Cluster GET/SET: our RedisCluster vs redis-py's asyncio RedisCluster, interleaved.

``python bench/redis_cluster.py [N] [ROUNDS]`` starts a private 3-primary cluster on free ports
(``tests/redis_cluster.py``), then runs, for each client in turn (A B A B ...), 50 concurrent
callers doing N SETs and then N GETs over 1,000 keys spread over every slot range.  Each client
runs in its own process; redis-py from the peers venv (``/tmp/peers-venv``, made by
``../shared/peers/setup.sh``).  Prints ops/s per round, the medians and our ratio.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.redis_cluster import RedisClusterServers  # noqa: E402

PEER_PY = "/tmp/peers-venv/bin/python"
KEYS = "[f'bench:{i}' for i in range(1000)]"
OURS = f"""
import sys, time
from twisted.internet import task, defer
from tx_swoole.clients.redis import RedisCluster
N, C, PORT = map(int, sys.argv[1:4])
keys = {KEYS}
async def main(reactor):
    c = RedisCluster([("127.0.0.1", PORT)], size=10)
    await c.set("warm", "up")
    for verb, op in (("SET", lambda k: c.set(k, "v" * 16)), ("GET", c.get)):
        async def caller(n):
            for i in range(N // C):
                await op(keys[(n * 7919 + i) % 1000])
        t = time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(caller(n)) for n in range(C)])
        print(f"{{verb}} {{N / (time.perf_counter() - t):.0f}}")
    await c.close()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""
PEER = f"""
import sys, time, asyncio
from redis.asyncio.cluster import RedisCluster
N, C, PORT = map(int, sys.argv[1:4])
keys = {KEYS}
async def main():
    c = RedisCluster(host="127.0.0.1", port=PORT)
    await c.set("warm", "up")
    for verb, op in (("SET", lambda k: c.set(k, "v" * 16)), ("GET", c.get)):
        async def caller(n):
            for i in range(N // C):
                await op(keys[(n * 7919 + i) % 1000])
        t = time.perf_counter()
        await asyncio.gather(*[caller(n) for n in range(C)])
        print(f"{{verb}} {{N / (time.perf_counter() - t):.0f}}")
    await c.aclose() if hasattr(c, "aclose") else await c.close()
asyncio.run(main())
"""


def run(python: str, source: str, n: int, port: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([python, "-c", source, str(n), "50", str(port)], capture_output=True,
                         text=True, timeout=600, env=env)  # fmt: skip
    if out.returncode:
        raise SystemExit(out.stderr)
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+) (\d+)", out.stdout)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    servers = RedisClusterServers(Path(tempfile.mkdtemp()), replicas=0)
    servers.start()
    try:
        ours: dict[str, list[float]] = {"SET": [], "GET": []}
        peer: dict[str, list[float]] = {"SET": [], "GET": []}
        for r in range(rounds):
            for name, python, source, into in (("tx_swoole", sys.executable, OURS, ours),
                                               ("redis-py", PEER_PY, PEER, peer)):  # fmt: skip
                got = run(python, source, n, servers.ports[0])
                print(f"round {r + 1} {name:10} SET {got['SET']:8.0f}/s  GET {got['GET']:8.0f}/s",
                      flush=True)  # fmt: skip
                for verb in into:
                    into[verb].append(got[verb])
        for verb in ("SET", "GET"):
            a, b = statistics.median(ours[verb]), statistics.median(peer[verb])
            print(f"{verb}: tx_swoole {a:.0f}/s, redis-py asyncio RedisCluster {b:.0f}/s, "
                  f"ratio {a / b:.2f}x (50 callers, medians of {rounds})")  # fmt: skip
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
