"""Instructions per HTTP request through the protocol alone (no sockets), under callgrind.

``python bench/http_instructions.py`` runs this file twice under
``valgrind --tool=callgrind`` (N1 and N2 requests) and prints the difference per request, so
start-up and imports cancel out.  Each request is fed to ``HTTPProtocol.dataReceived`` as one
read, answered by the hello example's handler and written to a transport that only counts
bytes: the work of the HTTP layer itself, deterministic to within a few instructions.

With ``--real`` it measures a real server instead (SwooleReactor, the write-through
transport, loopback sockets; the client runs outside valgrind): the whole per-request path,
reactor and system calls included.

``python bench/http_instructions.py --run N SHAPE`` is the measured body (SHAPE: ``wrk``, a
keep-alive HTTP/1.1 GET as wrk sends it; ``ab``, an HTTP/1.0 keep-alive GET with 4 headers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
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

    factory = HTTPFactory(
        handler, json.loads(os.environ.get("SETTINGS", "{}")), reactor=task.Clock()
    )
    proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = CountingTransport()
    proto.makeConnection(transport)
    data = SHAPES[shape]
    for _ in range(n):
        proto.dataReceived(data)
    assert transport.written > 100 * n, "responses were not written"


def serve(n: int, shape: str, port_file: str) -> None:
    """A real server on SwooleReactor (loopback, write-through transport) that stops after
    ``n`` requests; the bound port is written to ``port_file``."""
    from tx_swoole import reactor as swoole_reactor

    swoole_reactor.install()
    from twisted.internet import reactor

    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    from http_hello import handler

    from tx_swoole.protocols.http import HTTPFactory
    from tx_swoole.transport import listen_tcp

    factory = HTTPFactory(handler, {}, reactor=reactor)

    def counted(request: Any, response: Any) -> None:
        handler(request, response)
        if factory.requestCount >= n:
            reactor.stop()  # type: ignore[attr-defined]

    factory.handler = counted
    port = listen_tcp(0, factory, interface="127.0.0.1")
    with open(port_file, "w") as f:
        f.write(str(port.getHost().port))
    reactor.run()  # type: ignore[attr-defined]


def client(port: int, n: int, shape: str, connections: int = 10) -> None:
    """``n`` requests over ``connections`` keep-alive connections, one in flight on each."""
    import selectors
    import socket

    data = SHAPES[shape]
    sel = selectors.DefaultSelector()
    left = n
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(data)
        left -= 1
        sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select(timeout=60):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            if chunk.endswith(b"</h1>") and left > 0:
                left -= 1
                sock.sendall(data)


def instructions(n: int, shape: str, real: bool = False) -> int:
    # A fixed hash seed: dict and set layouts (and so the counts) vary with it by ~500 per
    # request from one run to the next otherwise.
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
               sys.executable, __file__]  # fmt: skip
        if not real:
            out = subprocess.run(
                [*cmd, "--run", str(n), shape],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            stderr = out.stderr
        else:
            port_file = os.path.join(tmp, "port")
            proc = subprocess.Popen(
                [*cmd, "--serve", str(n), shape, port_file],
                stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            while not os.path.exists(port_file) or not open(port_file).read():
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read() if proc.stderr else "server died")
                time.sleep(0.2)
            client(int(open(port_file).read()), n + 50, shape)
            stderr = proc.communicate()[1]
    found = re.search(r"Collected : (\d+)", stderr)
    assert found, stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run(int(sys.argv[2]), sys.argv[3])
        return
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    real = "--real" in sys.argv
    shapes = [a for a in sys.argv[1:] if a in SHAPES] or list(SHAPES)
    n1, n2 = (2000, 12000) if not real else (1000, 6000)
    for shape in shapes:
        per = (instructions(n2, shape, real) - instructions(n1, shape, real)) / (n2 - n1)
        where = "real server, loopback" if real else "protocol only"
        print(f"{shape} ({where}): {per:,.0f} instructions per request")


if __name__ == "__main__":
    main()
