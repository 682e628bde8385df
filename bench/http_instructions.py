"""Instructions per HTTP request through the protocol alone (no sockets), under callgrind.

``python bench/http_instructions.py`` runs this file twice under
``valgrind --tool=callgrind`` (N1 and N2 requests) and prints the difference per request, so
start-up and imports cancel out.  Each request is fed to ``HTTPProtocol.dataReceived`` as one
read, answered by the hello example's handler and written to a transport that only counts
bytes: the work of the HTTP layer itself, deterministic to within a few instructions.

``python bench/http_instructions.py --run N SHAPE`` is the measured body (SHAPE: ``wrk``, a
keep-alive HTTP/1.1 GET as wrk sends it; ``ab``, an HTTP/1.0 keep-alive GET with 4 headers).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9501\r\n\r\n",
    "ab": (
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:9501\r\n"
        b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"
    ),
}


class CountingTransport:
    """The parts of a TCP transport the HTTP protocol uses; it keeps nothing it is sent."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pendingBytes(self) -> int:
        return 0

    def getPeer(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 40000)

    getHost = getPeer

    def getHandle(self) -> Any:
        return self

    def setsockopt(self, *args: Any) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    def loseWriteConnection(self) -> None:
        pass

    def abortConnection(self) -> None:
        pass


def run(n: int, shape: str) -> None:
    from twisted.internet import task
    from twisted.internet.address import IPv4Address

    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    from http_hello import handler

    from tx_swoole.protocols.http import HTTPFactory

    factory = HTTPFactory(handler, {}, reactor=task.Clock())
    proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = CountingTransport()
    proto.makeConnection(transport)
    data = SHAPES[shape]
    for _ in range(n):
        proto.dataReceived(data)
    assert transport.written > 100 * n, "responses were not written"


def instructions(n: int, shape: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, __file__, "--run", str(n), shape],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    assert found, out.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run(int(sys.argv[2]), sys.argv[3])
        return
    n1, n2 = 2000, 12000
    for shape in sys.argv[1:] or list(SHAPES):
        per = (instructions(n2, shape) - instructions(n1, shape)) / (n2 - n1)
        print(f"{shape}: {per:,.0f} instructions per request")


if __name__ == "__main__":
    main()
