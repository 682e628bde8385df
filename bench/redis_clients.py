"""GET throughput: our RedisPool vs txredisapi and redis.asyncio, in one run.

``python bench/redis_clients.py [N]`` starts a private redis-server on a free port and runs the
workload of ``../shared/peers/redis_compare.sh`` for each client: 50 concurrent callers over a
pool of 10, bursts of 1,000 commands in flight, and an explicit pipeline of 1,000; and the C
``redis-benchmark`` (GET, 10 and 50 connections) against the same server, the machine's
ceiling, so that a regression of ours shows as a falling ratio.  The peers
run from the peers venv (``/tmp/peers-venv``, made by ``../shared/peers/setup.sh``).  Prints
ops/s and the ratios.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "..", "..", "shared", "peers")
PEER_PY = "/tmp/peers-venv/bin/python"
OURS = r"""
import sys, time
from twisted.internet import task, defer
from tx_swoole.clients.redis import RedisPool
N, C, P, PORT = map(int, sys.argv[1:5])
async def main(reactor):
    pool = RedisPool(port=PORT, size=P)
    await pool.set("k", "v" * 16)
    async def worker(n):
        for _ in range(n):
            await pool.get("k")
    t = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(worker(N // C)) for _ in range(C)])
    print(f"tx_swoole GET conc={C} pool={P}: {N / (time.perf_counter() - t):.0f} ops/s")
    t = time.perf_counter()
    for _ in range(N // 1000):
        await defer.gatherResults([pool.get("k") for _ in range(1000)])
    print(f"tx_swoole GET burst1000 pool={P}: {N / (time.perf_counter() - t):.0f} ops/s")
    t = time.perf_counter()
    for _ in range(N // 1000):
        p = pool.pipeline()
        for _ in range(1000):
            p.get("k")
        await p.execute()
    print(f"tx_swoole GET pipeline1000: {N / (time.perf_counter() - t):.0f} ops/s")
    await pool.close()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    print(out, end="", flush=True)
    found = {}
    for line in out.splitlines():
        m = re.match(r"(\S+) GET (\S+?):? .*?(\d+) ops/s", line)
        if m:
            found[f"{m.group(1)} {m.group(2)}"] = float(m.group(3))
    return found


def main() -> None:
    n = sys.argv[1] if len(sys.argv) > 1 else "100000"
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    args = [n, "50", "10", str(port)]
    try:
        r: dict[str, float] = {}
        r |= run([sys.executable, "-c", OURS, *args])
        r |= run([PEER_PY, os.path.join(PEERS, "txredisapi_bench.py"), *args])
        r |= run([PEER_PY, os.path.join(PEERS, "redispy_bench.py"), *args])
        for clients in (10, 50):  # the C client, over as many connections as our pool, and 50
            out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "get", "-n", n,
                                  "-c", str(clients), "-q"], capture_output=True,
                                 text=True).stdout.replace("\r", "\n")  # fmt: skip
            m = re.findall(r"([\d.]+) requests per second", out)
            if m:
                r[f"redis-benchmark c{clients}"] = float(m[-1])
                print(f"redis-benchmark (C) GET -c {clients}: {float(m[-1]):.0f} ops/s")
    finally:
        server.terminate()
        server.wait()
    pairs = [
        ("tx_swoole conc=50", "txredisapi conc=50"),
        ("tx_swoole burst1000", "txredisapi burst1000"),
        ("tx_swoole conc=50", "redis.asyncio conc=50"),
        ("tx_swoole pipeline1000", "redis.asyncio pipeline1000"),
        ("tx_swoole conc=50", "redis-benchmark c10"),
        ("tx_swoole conc=50", "redis-benchmark c50"),
    ]
    for ours, peer in pairs:
        if ours in r and peer in r:
            print(f"ratio {ours} / {peer} = {r[ours] / r[peer]:.2f}")


if __name__ == "__main__":
    main()
