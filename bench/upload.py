"""Upload SIZE bytes as one multipart/form-data file, ours against aiohttp's multipart reader
writing to disk, interleaved (A B A B ...): MB/s and each server's RSS growth (peak during the
upload, sampled from /proc).  usage: python bench/upload.py   env: SIZE (1 GiB), ROUNDS (3)

With CONCURRENT=N, N uploads of SIZE bytes at once instead, through each server in turn (the
memory law: Swoole would hold N x package_max_length).

Both servers run one process; the client streams the body from memory in 256 KiB pieces.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/tmp/peers-venv/bin/python"
SIZE = int(os.environ.get("SIZE", str(1 << 30)))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BOUNDARY = b"----benchBoundary7MA4YWxk"
PIECE = b"u" * (256 * 1024)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


CONCURRENT = int(os.environ.get("CONCURRENT", "0"))


def upload(port: int, pid: int) -> tuple[float, int]:
    return concurrent_uploads(port, pid, CONCURRENT or 1)


def concurrent_uploads(port: int, pid: int, n: int) -> tuple[float, int]:
    """``n`` uploads at once, interleaved piece by piece over ``n`` sockets: MB/s and the
    server's RSS growth (sampled after each round of pieces)."""
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    length = len(head) + SIZE + len(tail)
    before = peak = rss(pid)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data; "
            b"boundary=" + BOUNDARY + b"\r\nContent-Length: %d\r\n\r\n" % length + head
        )
    left = SIZE
    while left:
        piece = PIECE if left >= len(PIECE) else PIECE[:left]
        for sock in socks:
            sock.sendall(piece)
        left -= len(piece)
        peak = max(peak, rss(pid))
    for sock in socks:
        sock.sendall(tail)
    for sock in socks:
        answer = b""
        while not answer.endswith(b"\n") or b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        assert answer.split(b"\r\n\r\n", 1)[1].strip() == str(SIZE).encode(), answer[-200:]
        sock.close()
    return n * SIZE / (time.monotonic() - started) / 1e6, peak - before


def main() -> None:
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "upload.toml")
    with open(cfg, "w") as f:
        f.write(
            '[server]\ntype = "http"\nport = 8097\napp = "upload_app:handler"\n'
            f'[settings]\nworker_num = 0\nlog_level = "warning"\n'
            f"package_max_length = {SIZE + (1 << 20)}\nhttp_body_timeout = 600\n"
        )
    servers = {
        "ours": (
            subprocess.Popen(
                ["twistd", "-n", "--pidfile=", "swoole", "-c", cfg],
                cwd=HERE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            8097,
        ),
        "aiohttp": (
            subprocess.Popen(
                [PY, os.path.join(HERE, "aiohttp_upload.py"), "8098"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            8098,
        ),
    }
    try:
        for _, port in servers.values():
            wait_port(port)
        runs: dict[str, list[tuple[float, int]]] = {n: [] for n in servers}
        for r in range(ROUNDS):
            for name, (proc, port) in servers.items():
                mbs, grew = upload(port, proc.pid)
                runs[name].append((mbs, grew))
                print(f"{name} round {r + 1}: {mbs:.0f} MB/s, RSS +{grew / 2**20:.1f} MiB")
        med = {
            n: (statistics.median(m for m, _ in v), max(g for _, g in v)) for n, v in runs.items()
        }
        for name, (mbs, grew) in med.items():
            print(f"median {name}: {mbs:.0f} MB/s, RSS growth at most {grew / 2**20:.1f} MiB")
        print(f"ours / aiohttp throughput = {med['ours'][0] / med['aiohttp'][0]:.2f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
