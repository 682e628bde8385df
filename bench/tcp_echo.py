"""Echo round-trip throughput: ours vs a plain Twisted echo, in one run.

``python bench/tcp_echo.py [CONNECTIONS] [SECONDS] [SIZE]`` starts each server in its own
process and drives it from a client process with CONNECTIONS connections doing ping-pong of
SIZE-byte messages for SECONDS; prints round trips per second and the ratio to Twisted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = r"""
import sys, time
from twisted.internet import reactor, protocol
port, conns, secs, size = map(int, sys.argv[1:5])
msg = b"x" * size
count = [0]
stop_at = [0.0]
class Ping(protocol.Protocol):
    def connectionMade(self):
        self.buf = 0
        self.transport.write(msg)
    def dataReceived(self, data):
        self.buf += len(data)
        while self.buf >= size:
            self.buf -= size
            count[0] += 1
            self.transport.write(msg)
f = protocol.ClientFactory.forProtocol(Ping)
for _ in range(conns):
    reactor.connectTCP("127.0.0.1", port, f)
def begin():
    count[0] = 0
    reactor.callLater(secs, done, time.perf_counter())
def done(t0):
    print(count[0] / (time.perf_counter() - t0))
    reactor.stop()
reactor.callLater(1.0, begin)
reactor.run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(mode: str, conns: int, secs: int, size: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "servers.py"), mode, str(port)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    server.stdout.readline()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port), str(conns), str(secs), str(size)],
            capture_output=True, text=True, check=True, timeout=secs + 60,
        )  # fmt: skip
        return float(out.stdout.strip())
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    secs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    results = {}
    for mode in ("twisted", "ours-plain-transport", "ours"):
        results[mode] = run(mode, conns, secs, size)
        print(f"{mode:22s} {results[mode]:10.0f} round trips/s", flush=True)
        time.sleep(0.5)
    for mode, value in results.items():
        print(f"ratio {mode:22s} / twisted = {value / results['twisted']:.2f}")


if __name__ == "__main__":
    main()
