"""What ``bench/cross_worker.py`` serves: length-prefixed frames whose body is an 8-byte
target connection id and a payload; the payload goes to that connection (``server.send``),
which may be held by this worker or the other.  A frame of body ``who`` answers the id."""

from __future__ import annotations

import struct

from tx_swoole.protocols.tcp import TCPProtocol


class Relay(TCPProtocol):
    def messageReceived(self, data: bytes) -> None:
        body = data[4:]
        if body == b"who":
            self.send(struct.pack(">IQ", 8, self.connId))
            return
        (target,) = struct.unpack(">Q", body[:8])
        payload = body[8:]
        self.server.send(target, struct.pack(">I", len(payload)) + payload)
