"""The TechEmpower test types: tx_swoole beside uvicorn + raw ASGI + aiomysql, aiohttp +
aiomysql and twisted.web + adbapi/PyMySQL, each one process, on the same private MariaDB.

``python bench/techempower/run.py [SECONDS] [ROUNDS] [TESTS]`` starts MariaDB and Redis (as the
tests do), loads ``World`` and ``Fortune`` (``world.py``) and the worlds into Redis, starts the
four servers (and ours again with the pool's ``pipeline=16`` for the database tests) and loads
each test type with ``wrk`` (pinned to CPU 0 with ``taskset``; plaintext pipelined 16 deep) at
64 and 256 connections, servers interleaved (A B C D, ROUNDS times); prints the median
requests/s and our ratios to the best peer.  Peers run from
``/tmp/mysql-peers`` (``python3 -m venv /tmp/mysql-peers && /tmp/mysql-peers/bin/pip install
aiomysql pymysql twisted cryptography uvicorn httptools uvloop aiohttp``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]
from world import WORLDS, schema_sql  # noqa: E402

from tests.mysql_server import DATABASE, PASSWORD, USER, MariaDB, free_port  # noqa: E402

PEER_PY = "/tmp/mysql-peers/bin/python"
# The same app with the pool's pipeline=16: reads queued in the pool go out together (the
# driver's own optimisation, the business logic unchanged; TechEmpower allows it since Round 17)
PIPELINED = "tx_swoole pipeline=16"
DATABASE_TESTS = ("db", "queries", "fortunes", "updates")
TESTS = {"plaintext": "/plaintext", "json": "/json", "db": "/db",
         "queries": "/queries?queries=20", "fortunes": "/fortunes",
         "updates": "/updates?queries=20", "redis-db": "/redis/db"}  # fmt: skip


def load(server: MariaDB, redis_port: int) -> None:
    subprocess.run(["mariadb", "-h127.0.0.1", f"-P{server.port}", f"-u{USER}", f"-p{PASSWORD}",
                    DATABASE], input=schema_sql().encode(), check=True)  # fmt: skip
    rows = subprocess.run(["mariadb", "-N", "-h127.0.0.1", f"-P{server.port}", f"-u{USER}",
                           f"-p{PASSWORD}", DATABASE, "-e", "SELECT id, randomNumber FROM World"],
                          capture_output=True, check=True).stdout.split()  # fmt: skip
    pairs = " ".join(f"world:{i.decode()} {n.decode()}"
                     for i, n in zip(rows[::2], rows[1::2], strict=True))  # fmt: skip
    subprocess.run(["redis-cli", "-p", str(redis_port)], input=f"MSET {pairs}\n".encode(),
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    assert len(rows) == 2 * WORLDS


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def servers(env: dict[str, str], tmp: Path) -> dict[str, tuple[list[str], int]]:
    names = ("tx_swoole", PIPELINED, "uvicorn", "aiohttp", "twisted.web")
    ports = {name: free_port() for name in names}
    for name in ("tx_swoole", PIPELINED):
        (tmp / f"{name}.toml").write_text(
            (HERE / "app.toml").read_text().replace("port = 8080", f"port = {ports[name]}")
        )
    shutil.copy(HERE / "app.py", tmp / "app.py")
    shutil.copy(HERE / "world.py", tmp / "world.py")
    return {
        **{name: ([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "swoole", "-c", str(tmp / f"{name}.toml")], ports[name])
           for name in ("tx_swoole", PIPELINED)},
        "uvicorn": ([PEER_PY, "-m", "uvicorn", "peer_asgi:app", "--port", str(ports["uvicorn"]),
                     "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                     "--log-level", "warning", "--no-access-log"], ports["uvicorn"]),
        "aiohttp": ([PEER_PY, "peer_aiohttp.py", str(ports["aiohttp"])], ports["aiohttp"]),
        "twisted.web": ([PEER_PY, "peer_twisted.py", str(ports["twisted.web"])],
                        ports["twisted.web"]),
    }  # fmt: skip


def wrk(port: int, path: str, connections: int, seconds: int, pipeline: bool) -> float:
    cmd = ["taskset", "-c", "0", "wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
           f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    if pipeline:
        cmd += ["-s", str(HERE / "pipeline.lua"), "--", "16"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if errors:
        print(f"    ({port} {path}: {errors.group(0)})")
    return float(m.group(1)) if m else 0.0


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    tests = sys.argv[3].split(",") if len(sys.argv) > 3 else list(TESTS)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db = MariaDB(tmp)
        db.start()
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL)  # fmt: skip
        procs.append(redis)
        try:
            time.sleep(0.5)
            load(db, redis_port)
            env = {**os.environ, "MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": str(db.port),
                   "MYSQL_USER": USER, "MYSQL_PASSWORD": PASSWORD, "MYSQL_DATABASE": DATABASE,
                   "REDIS_PORT": str(redis_port), "PYTHONPATH": str(ROOT)}  # fmt: skip
            table = servers(env, tmp)
            for name, (cmd, port) in table.items():
                extra = {"MYSQL_PIPELINE": "16"} if name == PIPELINED else {}
                procs.append(subprocess.Popen(cmd, cwd=HERE, env={**env, **extra},
                                              stdout=subprocess.DEVNULL))  # fmt: skip
                wait_port(port, procs[-1])
            results: dict[tuple[str, int, str], list[float]] = {}
            table_ours = ("tx_swoole", PIPELINED)
            for test in tests:
                for connections in (64, 256):
                    for _ in range(rounds):
                        for server, (_, port) in table.items():
                            if test == "redis-db" and server != "tx_swoole":
                                continue  # (the peers have no Redis variant)
                            if server == PIPELINED and test not in DATABASE_TESTS:
                                continue  # (no statements there)
                            rps = wrk(port, TESTS[test], connections, seconds,
                                      test == "plaintext")  # fmt: skip
                            results.setdefault((test, connections, server), []).append(rps)
                    line = f"{test:10s} c{connections:<4d}"
                    ours = statistics.median(results[(test, connections, "tx_swoole")])
                    piped = results.get((test, connections, PIPELINED))
                    peers = {s: statistics.median(v) for (t, c, s), v in results.items()
                             if t == test and c == connections and s not in table_ours}  # fmt: skip
                    line += f" tx_swoole {ours:9.0f}"
                    if piped:
                        line += f"  pipeline=16 {statistics.median(piped):8.0f}"
                    for s, v in peers.items():
                        line += f"  {s} {v:8.0f}"
                    if peers:
                        best = max(peers.values())
                        line += f"   ratio to the best peer {ours / best:.2f}x" if best else ""
                        if piped and best:
                            line += f" ({statistics.median(piped) / best:.2f}x pipelined)"
                    print(line, flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
            db.stop()


if __name__ == "__main__":
    main()
