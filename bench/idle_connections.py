"""Memory and idle CPU of N idle connections: ours (heartbeat on) vs Twisted + TimeoutMixin.

``python bench/idle_connections.py [N] [IDLE_SECONDS]`` starts each server in its own process,
opens N connections from a client process (``http``: each asks for one page and keeps
the connection open), then reads the server's RSS growth per connection
and its CPU use over IDLE_SECONDS from /proc.  The heartbeat checks every second (ours) or each
connection holds a timeout timer (Twisted's TimeoutMixin).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(mode: str, n: int, idle: float) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "servers.py"), mode, str(port), "3600"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    server.stdout.readline()
    time.sleep(0.5)
    base = rss_kb(server.pid)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        if mode == "http":  # keep-alive connections: each has had one request answered
            for s in socks:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks:
                if b"200 OK" not in s.recv(4096):
                    raise RuntimeError("the HTTP server did not answer")
        time.sleep(2.0)
        per_conn = (rss_kb(server.pid) - base) * 1024 / n
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(idle)
        cpu = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0) * 100
        return per_conn, cpu
    finally:
        for s in socks:
            s.close()
        server.terminate()
        server.wait()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15000
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {}
    for mode in ["twisted", "ours", *sys.argv[3:]]:  # extra modes: http
        results[mode] = measure(mode, n, idle)
        per_conn, cpu = results[mode]
        print(f"{mode:8s} {n} idle connections: {per_conn:7.0f} B RSS each, idle CPU {cpu:.2f}%")
    ratio = results["ours"][0] / results["twisted"][0]
    print(f"ratio ours / twisted memory per connection = {ratio:.2f}")


if __name__ == "__main__":
    main()
