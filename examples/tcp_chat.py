"""Length-prefixed chat room: each message goes to every other connected client.

A message is a 4-byte big-endian length followed by that many bytes of UTF-8 text
(``package_length_type = "N"``, ``package_body_offset = 4``).  ``/who`` answers with the
connection ids in the room.  Run it with ``twistd -n swoole -c examples/tcp_chat.toml``.
"""

import struct

from tx_swoole.protocols.tcp import TCPProtocol


def frame(text: str) -> bytes:
    """One chat frame: 4-byte big-endian length, then the UTF-8 text."""
    body = text.encode("utf-8")
    return struct.pack(">I", len(body)) + body


class Chat(TCPProtocol):
    """Broadcasts each framed message to the other members of the room."""

    def connectionOpened(self) -> None:
        self.send(frame(f"welcome #{self.connId}"))
        self.broadcast(f"#{self.connId} joined")

    def messageReceived(self, data: bytes) -> None:
        text = data[4:].decode("utf-8", "replace")
        if text == "/who":
            self.send(frame(" ".join(f"#{i}" for i in self.server.listConnections())))
        else:
            self.broadcast(f"#{self.connId}: {text}")

    def connectionClosed(self, reason: str) -> None:
        self.broadcast(f"#{self.connId} left ({reason})")

    def broadcast(self, text: str) -> None:
        message = frame(text)
        for connId in self.server.listConnections():
            if connId != self.connId:
                self.server.send(connId, message)
