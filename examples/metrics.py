"""Counters fed over UDP, shown over HTTP, managed over a Unix socket; see metrics.toml.

Run it with ``twistd -n swoole -c examples/metrics.toml``.
"""

from collections import Counter
from typing import Any

from twisted.internet import reactor, task

from tx_swoole.protocols.http import Request, Response
from tx_swoole.protocols.tcp import TCPProtocol
from tx_swoole.protocols.udp import UDPProtocol

COUNTS: Counter[str] = Counter()


class StatsD(UDPProtocol):
    """``name:value|c`` lines (several per datagram are fine) add to counter ``name``."""

    def datagramReceived(self, data: bytes, address: tuple[str, int]) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if name and kind == "c" and value.lstrip("-").isdigit():
                COUNTS[name] += int(value)


def page(request: Request, response: Response) -> None:
    """Every counter, one per line."""
    response.header("Content-Type", "text/plain")
    response.end("".join(f"{name} {value}\n" for name, value in sorted(COUNTS.items())))


class Admin(TCPProtocol):
    """``get NAME`` answers the counter, ``reset`` clears them all."""

    def messageReceived(self, data: bytes) -> None:
        command, _, name = data.decode("utf-8", "replace").strip().partition(" ")
        if command == "get":
            self.send(f"{COUNTS[name]}\n".encode())
        elif command == "reset":
            COUNTS.clear()
            self.send(b"ok\n")
        else:
            self.send(b"commands: get NAME, reset\n")


async def beat(server: Any) -> None:
    """``[[process]]``: a beat to worker 0 every second, until the server stops."""
    while True:
        server.sendMessage("beat", 0)
        await task.deferLater(reactor, 1.0, lambda: None)  # type: ignore[arg-type]


def on_message(server: Any, src_worker_id: int, data: Any) -> None:
    """``[events] pipe_message``: the beats of the process."""
    if data == "beat":
        COUNTS["beats"] += 1
