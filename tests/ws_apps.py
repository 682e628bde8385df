"""WebSocket apps the tests serve with ``twistd swoole``."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from tx_swoole.errors import WebSocketHandshakeError
from tx_swoole.protocols.http import Request, Response
from tx_swoole.protocols.websocket import CloseFrame, Ping, Pong, WebSocketProtocol


class Echo(WebSocketProtocol):
    """Echoes messages; a few text commands act on the server."""

    def handshake(self, request: Request) -> str | None:
        if request.headers.get("origin") == "http://evil.example":
            raise WebSocketHandshakeError("origin http://evil.example is not allowed", 403)
        offered = [
            p.strip() for p in (request.headers.get("sec-websocket-protocol") or "").split(",")
        ]
        return "chat" if "chat" in offered else None

    def connectionOpened(self, request: Request) -> None:
        self.send(f"welcome #{self.connId} to {request.path}")

    def messageReceived(self, message: str | bytes) -> Any:
        if message == "close":
            self.disconnect(4000, "bye")
        elif isinstance(message, str) and message.startswith("broadcast:"):
            self.send(f"sent to {self.server.broadcast(message[10:])}")
        elif message == "slow":  # an async hook: the next message waits for it
            return task.deferLater(self.server.reactor, 0.2, self.send, "slow done")
        elif message == "fail":
            raise RuntimeError("asked to fail")
        elif message == "ids":
            ids = self.server.listConnections()
            self.send(" ".join(str(i) for i in ids if self.server.isEstablished(i)))
        else:
            self.send(message)
        return None


class AsyncEcho(WebSocketProtocol):
    async def handshake(self, request: Request) -> None:
        await task.deferLater(self.factory.reactor, 0.01, lambda: None)
        if request.path == "/refuse":
            raise WebSocketHandshakeError("refused later", 401)

    async def messageReceived(self, message: str | bytes) -> None:
        await defer.succeed(None)
        self.send(message)


def http(request: Request, response: Response) -> None:
    response.header("Content-Type", "text/plain")
    response.end(f"plain http {request.path}")


# Swoole-style functions instead of a class: [events] open / message / close / handshake.
def on_handshake(request: Request) -> str | None:
    if request.path == "/private":
        raise WebSocketHandshakeError("private", 401)
    return None


def on_open(server: Any, connId: int, request: Request) -> None:
    server.push(connId, f"hello {connId} at {request.path}")


async def on_message(server: Any, connId: int, message: str | bytes) -> None:
    await defer.succeed(None)
    server.push(connId, message)


def on_close(server: Any, connId: int, code: int, reason: str) -> None:
    server.broadcast(f"{connId} left with {code}")


def on_frame(server: Any, connId: int, message: Any) -> None:
    """With Swoole's open_websocket_ping_frame and close_frame: control frames come here."""
    if isinstance(message, Ping):
        server.push(connId, Pong(message.data))  # answered by hand, as Swoole's onMessage does
        server.push(connId, f"pinged {message.data.decode()}")
    elif isinstance(message, CloseFrame):
        server.push(connId, f"closing {message.code} {message.reason}")
    else:
        server.push(connId, message)


class Room(WebSocketProtocol):
    """Says its id; ``push N text`` pushes to connection N, anything else goes to everyone."""

    def connectionOpened(self, request: Request) -> None:
        self.send(f"id {self.connId}")
        self.server.broadcast(f"joined {self.connId}")

    def messageReceived(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        if message.startswith("push "):
            _, target, text = message.split(" ", 2)
            self.send(f"pushed {self.server.push(int(target), text)}")
        else:
            self.server.broadcast(f"{self.connId}: {message}")
