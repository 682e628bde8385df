"""Request/response round trips: our TCPClient vs a plain Twisted client, in one run.

``python bench/tcp_client.py [N] [ROUNDS]`` starts a ``twistd swoole`` echo server with 4-byte
length framing (one worker) and, in a fresh process each time, runs each client against it:
N sequential round trips (one in flight), then N round trips with 50 in flight on the same
connection.  The plain Twisted client is ``Int32StringReceiver`` with a FIFO of Deferreds, the
smallest correct request/response client Twisted itself offers.  Clients alternate
(A B A B ...) for ROUNDS rounds; prints the median round trips per second, the client's CPU
time per round trip (steadier than wall time on a busy machine), and the ratios.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
COMMON = r"""
import struct, sys, time
from collections import deque
from twisted.internet import defer, task
N, PORT = int(sys.argv[1]), int(sys.argv[2])
BODY = b"x" * 64
MSG = struct.pack(">I", len(BODY)) + BODY
async def run(request, name):
    await request()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(N):
        await request()
    seq, seq_cpu = N / (time.perf_counter() - t), (time.process_time() - c) / N * 1e6
    t, c = time.perf_counter(), time.process_time()
    for _ in range(N // 50):
        await defer.gatherResults([defer.ensureDeferred(request()) for _ in range(50)])
    conc, conc_cpu = N / (time.perf_counter() - t), (time.process_time() - c) / N * 1e6
    print(f"{name} sequential {seq:.0f} concurrent50 {conc:.0f} "
          f"cpu_us {seq_cpu:.1f} {conc_cpu:.1f}")
"""
OURS = (
    COMMON
    + r"""
from tx_swoole.clients.tcp import TCPClient
async def main(reactor):
    client = TCPClient(port=PORT, settings={"open_length_check": True})
    await run(lambda: client.request(MSG), "tx_swoole")
    await client.close()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""
)
TWISTED = (
    COMMON
    + r"""
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver
class Client(Int32StringReceiver):
    MAX_LENGTH = 2 * 1024 * 1024
    def connectionMade(self):
        self.pending = deque()
    def stringReceived(self, data):
        self.pending.popleft().callback(data)
    def request(self, body):
        d = defer.Deferred()
        self.pending.append(d)
        self.sendString(body)
        return d
async def main(reactor):
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", PORT), Client())
    async def request():
        return await proto.request(BODY)
    await run(request, "twisted")
    proto.transport.loseConnection()
task.react(lambda r: defer.ensureDeferred(main(r)))
"""
)
CONFIG = """[server]
type = "tcp"
host = "127.0.0.1"
port = 0
app = "tests.tcp_apps:Tracked"
[settings]
worker_num = 0
open_length_check = true
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "echo.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        server = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--pidfile=", "-n", "swoole", "-c", cfg],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            port = 0
            assert server.stdout is not None
            for line in server.stdout:
                m = re.search(rb"serving tcp app \S+ on [\d.]+:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            with socket.create_connection(("127.0.0.1", port)):
                pass
            results: dict[str, list[tuple[float, ...]]] = {"tx_swoole": [], "twisted": []}
            for _ in range(rounds):
                for name, code in (("tx_swoole", OURS), ("twisted", TWISTED)):
                    out = subprocess.run(
                        [sys.executable, "-c", code, str(n), str(port)],
                        cwd=ROOT, capture_output=True, text=True, check=True,
                    ).stdout  # fmt: skip
                    m = re.search(r"sequential (\d+) concurrent50 (\d+) cpu_us (\S+) (\S+)", out)
                    assert m, out
                    results[name].append(tuple(float(g) for g in m.groups()))
                    print(out.strip())
                    time.sleep(0.2)
        finally:
            server.terminate()
            server.wait()
    for i, label in enumerate(("sequential", "50 in flight")):
        ours = statistics.median(r[i] for r in results["tx_swoole"])
        peer = statistics.median(r[i] for r in results["twisted"])
        print(f"{label}: tx_swoole {ours:.0f}/s, plain Twisted {peer:.0f}/s, "
              f"ratio {ours / peer:.2f}x")  # fmt: skip
        ours = statistics.median(r[i + 2] for r in results["tx_swoole"])
        peer = statistics.median(r[i + 2] for r in results["twisted"])
        print(f"{label}: client CPU per round trip: tx_swoole {ours:.1f} us, plain Twisted "
              f"{peer:.1f} us, ratio {peer / ours:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
