"""Cross-worker ``server.send``: messages/s and round-trip latency when the target connection
is held by the same worker and by the other one (2 workers), interleaved.

    python bench/cross_worker.py [--rounds R] [--n N] [--window W]

A sender connection sends N 32-byte messages addressed to a receiver connection (up to W in
flight); the receiver is found on the same worker or on the other (connection ids are
``n * worker_num + workerId``).  Latency: one message at a time, send to receipt.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path

from twistd_run import twistd


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sock.sendall(frame(b"who"))
        (self.id,) = struct.unpack(">Q", self.read())

    def read(self) -> bytes:
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4 : 4 + n], self.buf[4 + n :]
                    return body
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data


def pair(port: int, same: bool) -> tuple[Conn, Conn]:
    conns = [Conn(port)]
    while True:
        c = Conn(port)
        for other in conns:
            if (other.id % 2 == c.id % 2) == same:
                return other, c
        conns.append(c)


def throughput(sender: Conn, receiver: Conn, n: int, window: int) -> float:
    message = frame(struct.pack(">Q", receiver.id) + b"m" * 32)
    start = time.perf_counter()
    sent = got = 0
    while got < n:
        while sent < n and sent - got < window:
            sender.sock.sendall(message)
            sent += 1
        receiver.read()
        got += 1
    return n / (time.perf_counter() - start)


def latency(sender: Conn, receiver: Conn, n: int) -> float:
    message = frame(struct.pack(">Q", receiver.id) + b"m" * 32)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        sender.sock.sendall(message)
        receiver.read()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--window", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "relay.toml"
        port = 9741
        cfg.write_text(
            f'[server]\ntype = "tcp"\nport = {port}\napp = "relay_app:Relay"\n'
            '[settings]\nworker_num = 2\nlog_level = "warning"\nopen_length_check = true\n'
        )
        proc = twistd(cfg)
        try:
            time.sleep(3)
            pairs = {"same worker": pair(port, True), "other worker": pair(port, False)}
            time.sleep(0.5)  # the other worker hears of the new connections
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in pairs}
            for r in range(a.rounds):
                for name, (s, recv) in pairs.items():
                    rate = throughput(s, recv, a.n, a.window)
                    lat = latency(s, recv, 2000)
                    runs[name].append((rate, lat))
                    print(
                        f"round {r + 1} {name:12} {rate:9.0f} msg/s  p50 {lat:6.1f} us", flush=True
                    )
            for name, v in runs.items():
                print(
                    f"median {name:12} {statistics.median(x[0] for x in v):9.0f} msg/s  "
                    f"p50 {statistics.median(x[1] for x in v):6.1f} us"
                )
            rate = {k: statistics.median(x[0] for x in v) for k, v in runs.items()}
            lat = {k: statistics.median(x[1] for x in v) for k, v in runs.items()}
            print(
                f"other / same: {rate['other worker'] / rate['same worker']:.2f} of the rate, "
                f"+{lat['other worker'] - lat['same worker']:.1f} us latency"
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
