"""How plaintext and JSON grow with worker processes: tx_swoole ``worker_num``, uvicorn
``--workers`` and gunicorn with uvicorn workers, 1 and 2 processes, in one run.

``python bench/techempower/scaling.py [SECONDS] [ROUNDS]``: ``wrk`` is pinned to CPU 0; each
server runs three ways: 1 process on CPU 1, 2 processes on CPU 1, and 2 processes unpinned
(sharing CPU 0 with ``wrk``: all this 2-core machine has).  Servers alternate within each
round.  Prints the median requests/s per cell and each server's 2-process/1-process ratio.
Peers from ``/tmp/peers-venv`` (``../shared/peers/setup.sh``, then ``pip install gunicorn
aiomysql`` there); no database is needed for these two tests.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE)]
from run import ROOT, wait_port, wrk  # noqa: E402

from tests.mysql_server import free_port  # noqa: E402

PEER_PY = "/tmp/peers-venv/bin/python"
PLACES = [(1, "1"), (2, "1"), (2, None)]  # (processes, CPUs or None: unpinned)


def command(server: str, workers: int, port: int, tmp: Path) -> list[str]:
    if server == "tx_swoole":
        config = tmp / f"app-{port}.toml"
        text = (HERE / "app.toml").read_text().replace("port = 8080", f"port = {port}")
        config.write_text(text.replace("worker_num = 1", f"worker_num = {workers}"))
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "swoole", "-c", str(config)]  # fmt: skip
    if server == "uvicorn":
        return [PEER_PY, "-m", "uvicorn", "peer_asgi:app", "--port", str(port), "--workers",
                str(workers), "--loop", "uvloop", "--http", "httptools", "--log-level",
                "warning", "--no-access-log"]  # fmt: skip
    return [PEER_PY, "-m", "gunicorn", "peer_asgi:app", "-k", "uvicorn.workers.UvicornWorker",
            "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip


def measure(server: str, workers: int, cpus: str | None, test: str, seconds: int,
            tmp: Path) -> float:  # fmt: skip
    port = free_port()
    cmd = command(server, workers, port, tmp)
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port, proc)
        wrk(port, f"/{test}", 64, 1, test == "plaintext")  # warm up every worker
        return wrk(port, f"/{test}", 256 if test == "plaintext" else 64, seconds,
                   test == "plaintext")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    servers = ["tx_swoole", "uvicorn", "gunicorn+uvicorn"]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for f in ("app.py", "world.py", "peer_asgi.py"):
            shutil.copy(HERE / f, tmp / f)
        for test in ("plaintext", "json"):
            got: dict[tuple[str, int, str | None], list[float]] = {}
            for _ in range(rounds):
                for workers, cpus in PLACES:
                    for server in servers:
                        rps = measure(server, workers, cpus, test, seconds, tmp)
                        got.setdefault((server, workers, cpus), []).append(rps)
            shape = "256 connections, pipelined 16" if test == "plaintext" else "64 connections"
            print(f"{test} ({shape}):")
            for server in servers:
                cells = {place: statistics.median(got[(server, *place)]) for place in PLACES}
                one = cells[(1, "1")]
                print(f"  {server:17s} 1 on CPU 1 {one:8.0f}   2 on CPU 1 {cells[(2, '1')]:8.0f}"
                      f"   2 unpinned {cells[(2, None)]:8.0f}   2/1 unpinned "
                      f"{cells[(2, None)] / one:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
