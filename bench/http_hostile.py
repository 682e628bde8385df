"""What hostile HTTP clients cost the server, per MB they send, beside a normal upload.

``python bench/http_hostile.py [SECONDS]`` starts ``twistd swoole`` (one process, the
``tests/http_apps.py`` handler) for each shape, has a client send that shape for SECONDS
(default 3) over a few connections, reconnecting whenever the server closes, and reads the
server's CPU time and RSS from /proc.  It prints CPU seconds and RSS growth per MB sent, and
the CPU ratio to the normal upload.  ``OURS=DIR`` measures another checkout.

Shapes: ``upload`` (1 MiB bodies in 64 KiB writes: the baseline), ``trickled-head`` (a head
one byte per write), ``endless-trailer`` and ``chunk-extension`` (a chunked body whose trailer
value or chunk extension never ends), ``tiny-chunks`` (one-byte chunks), ``unread-pipeline``
(GETs for 20 kB responses, never read).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = os.environ.get("OURS", os.path.join(HERE, ".."))
TICK = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 4


def pieces(shape: str) -> Iterator[bytes]:
    """The bytes one connection sends, piece by piece, for ``shape``."""
    chunked = b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    if shape == "upload":
        while True:
            yield b"POST /upload HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n"
            for _ in range(16):
                yield b"u" * 65536
    elif shape == "trickled-head":
        while True:
            yield from (bytes([c]) for c in b"GET /?q=abcdefgh HTTP/1.1\r\nHost: h\r\n\r\n")
    elif shape in ("endless-trailer", "chunk-extension"):
        yield chunked + (b"0\r\nX-Trailer: " if shape == "endless-trailer" else b"5;ext=")
        while True:
            yield b"a" * 4096
    elif shape == "tiny-chunks":
        yield chunked
        while True:
            yield b"1\r\na\r\n" * 700
    elif shape == "unread-pipeline":
        while True:
            yield b"GET /big?n=20000 HTTP/1.1\r\n\r\n" * 100
    else:
        raise ValueError(shape)


def proc_stats(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return (int(fields[11]) + int(fields[12])) / TICK, rss * 1024


def drive(port: int, shape: str, seconds: float) -> int:
    """Send ``shape`` on CONNECTIONS connections for ``seconds``; return the bytes sent.
    Whatever the server answers is read and dropped (except for unread-pipeline)."""
    sent = 0
    socks: dict[socket.socket, tuple[Iterator[bytes], bytes]] = {}

    def open_one() -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks[s] = (pieces(shape), b"")

    for _ in range(CONNECTIONS):
        open_one()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, writable, _ = select.select(list(socks), list(socks), [], 0.05)
        for s in readable:
            if shape == "unread-pipeline":
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:  # the server closed it: start over on a new connection
                del socks[s]
                s.close()
                open_one()
        for s in writable:
            if s not in socks:
                continue
            it, rest = socks[s]
            data = rest or next(it)
            try:
                n = s.send(data)
            except OSError:
                del socks[s]
                s.close()
                open_one()
                continue
            sent += n
            socks[s] = (it, data[n:])
    for s in socks:
        s.close()
    return sent


def measure(shape: str, seconds: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "hostile.toml")
        with open(cfg, "w") as f:
            f.write(
                '[server]\ntype = "http"\nhost = "127.0.0.1"\nport = 0\n'
                'app = "tests.http_apps:handler"\n[settings]\nworker_num = 0\n'
                "package_max_length = 2097152\n"
            )
        log = os.path.join(tmp, "twistd.log")
        server = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--pidfile=", "--logfile", log, "-n", "swoole", "-c", cfg],
            cwd=OURS, env={**os.environ, "PYTHONPATH": OURS},
        )  # fmt: skip
        port = 0
        while not port:
            time.sleep(0.1)
            for line in open(log, "rb") if os.path.exists(log) else ():
                if b" on 127.0.0.1:" in line:
                    port = int(line.rsplit(b":", 1)[1].split()[0])
        cpu0, rss0 = proc_stats(server.pid)
        sent = drive(port, shape, seconds)
        time.sleep(0.3)  # let the server finish what it read
        cpu1, rss1 = proc_stats(server.pid)
        server.terminate()
        server.wait()
    mb = sent / 1e6
    return (cpu1 - cpu0) / mb, (rss1 - rss0) / 1e6 / mb, sent


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    shapes = ["upload", "trickled-head", "endless-trailer", "chunk-extension", "tiny-chunks",
              "unread-pipeline"]  # fmt: skip
    base = 0.0
    print(f"{'shape':16} {'MB sent':>9} {'CPU s/MB':>9} {'RSS MB/MB':>10} {'CPU vs upload':>14}")
    for shape in shapes:
        cpu, rss, sent = measure(shape, seconds)
        base = base or cpu
        print(f"{shape:16} {sent / 1e6:9.2f} {cpu:9.4f} {rss:10.4f} {cpu / base:13.1f}x")


if __name__ == "__main__":
    main()
