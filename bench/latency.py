"""Latency as keep-alive connections grow: hello world at 100, 1,000 and 10,000 connections,
tx_swoole (one worker, heartbeat sweeping every second) against uvicorn (httptools, uvloop,
one process), interleaved.

``python bench/latency.py [SECONDS] [ROUNDS]``: the server on CPU 1, ``wrk -t2 --latency`` on
CPU 0, file descriptors raised to 20,000.  Prints requests/s, p50 and p99 per server and
connection count (medians over the rounds), and how p99 grows from 100 connections.  uvicorn
from the peers venv (``../shared/peers/setup.sh``).
"""

from __future__ import annotations

import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "peers"
PEER_PY = "/tmp/peers-venv/bin/python"
SIZES = (100, 1000, 10000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(server: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if server == "tx_swoole":
        config = tmp / "hello.toml"
        config.write_text(
            f'[server]\ntype = "http"\nhost = "127.0.0.1"\nport = {port}\n'
            'app = "http_hello:handler"\n[settings]\nworker_num = 1\nlog_level = "warning"\n'
            "max_conn = 20000\nbacklog = 16384\nheartbeat_check_interval = 1\n"
            "heartbeat_idle_time = 300\n"
        )
        cmd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile=", "swoole", "-c", str(config)]  # fmt: skip
        cwd = HERE.parent / "examples"
    else:
        cmd = [PEER_PY, "-m", "uvicorn", "--app-dir", str(PEERS), "uvicorn_hello:app", "--port",
               str(port), "--http", "httptools", "--loop", "uvloop", "--no-access-log",
               "--log-level", "warning", "--backlog", "16384"]  # fmt: skip
        cwd = tmp
    proc = subprocess.Popen(["taskset", "-c", "1", *cmd], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{server} did not start")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, connections: int, seconds: int) -> tuple[float, float, float]:
    cmd = ["taskset", "-c", "0", "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "10s", f"http://127.0.0.1:{port}/"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        print(f"    ({connections} connections: socket errors {errors.group(1)})")
    return rps, p50, p99


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    got: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as name:
        for _ in range(rounds):
            for server in ("tx_swoole", "uvicorn"):
                proc, port = start(server, Path(name))
                try:
                    for c in SIZES:
                        wrk(port, c, 1)  # open the connections, warm up
                        got.setdefault((server, c), []).append(wrk(port, c, seconds))
                finally:
                    proc.terminate()
                    proc.wait()
    for server in ("tx_swoole", "uvicorn"):
        base = None
        for c in SIZES:
            runs = got[(server, c)]
            rps, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
            base = base or p99
            print(f"{server:9s} c={c:<5d} {rps:8.0f} req/s  p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"
                  f"  (p99 {p99 / base:.1f}x that at 100)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
