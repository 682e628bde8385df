"""Apps that the several-listener tests serve under ``twistd swoole``: a line chat over TCP
whose commands reach every listener's and every worker's connections, and a UDP echo."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.logger import Logger

from tx_swoole.protocols.tcp import TCPProtocol
from tx_swoole.protocols.udp import UDPProtocol

log = Logger("tests.listen_apps")


class Chat(TCPProtocol):
    """Lines (``open_eof_split`` with ``\\n``): ``ids`` lists the server's connections,
    ``say TEXT`` sends TEXT to every other one, anything else is echoed."""

    def connectionOpened(self) -> None:
        self.send(b"id %d\n" % self.connId)

    def messageReceived(self, data: bytes) -> None:
        line = data.rstrip(b"\n")
        if line == b"ids":
            ids = " ".join(str(c) for c in self.server.listConnections())
            self.send(ids.encode() + b"\n")
        elif line.startswith(b"say "):
            for connId in self.server.listConnections():
                if connId != self.connId:
                    self.server.send(connId, line[4:] + b"\n")
            self.send(b"said\n")
        else:
            self.send(b"echo " + line + b"\n")


class Peer(TCPProtocol):
    """Says the client's address as the server sees it (``getClientInfo``), then echoes."""

    def connectionOpened(self) -> None:
        info = self.server.getClientInfo(self.connId)
        self.send(f"peer {info.remote_host} {info.remote_port}\n".encode())

    def messageReceived(self, data: bytes) -> None:
        self.send(b"echo " + data)


class UDPEcho(UDPProtocol):
    """Answers ``WORKER_ID:DATA``; ``slow...`` answers after 0.5 s (logged when it starts)."""

    def datagramReceived(self, data: bytes, address: tuple[str, int]) -> Any:
        if data.startswith(b"slow"):
            log.info("slow datagram started")
            return task.deferLater(reactor, 0.5, self.answer, data, address)  # type: ignore[arg-type]
        if data == b"fail":
            raise RuntimeError("asked to fail")
        self.answer(data, address)
        return None

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        self.sendto(b"%d:" % self.server.workerId + data, address)
