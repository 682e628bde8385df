"""WebSocket client for any Twisted program, on the server's sans-IO core.

``ws = await connect("ws://127.0.0.1:9501/chat")``; ``ws.send("hi")`` (text for ``str``,
binary for ``bytes``); ``message = await ws.receive()``; ``await ws.ping()`` (fires when the
pong comes); ``await ws.close(1000, "bye")`` (waits for the close handshake).  ``wss://`` URLs
use TLS (``tls=`` an ``IOpenSSLClientConnectionCreator``, else Twisted's default for the host).

Resource handling: messages not yet received wait in memory, each at most ``max_message``
bytes (a bigger one closes the connection with 1009); ``close()`` waits at most
``close_timeout`` seconds.  Error handling: a refused handshake raises
:class:`~tx_swoole.errors.WebSocketHandshakeError` with the status; ``receive()`` and
``send()`` on a closed connection raise :class:`~tx_swoole.errors.WebSocketClosedError` with
the close code and reason.
"""

from __future__ import annotations

import base64
import os
from collections import deque
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tx_swoole.errors import WebSocketClosedError, WebSocketHandshakeError
from tx_swoole.protocols._websocket import (
    CLOSED,
    NORMAL,
    OPEN,
    Closed,
    PerMessageDeflate,
    Pong,
    Send,
    WebSocketConnection,
    accept_key,
)

__all__ = ["WebSocketClient", "connect"]
MAX_HEAD = 16384  # bytes of the server's handshake answer, at most


class WebSocketClient(Protocol):
    """One client connection (made by :func:`connect`); see the module docstring."""

    def __init__(self, request: bytes, key: str, reactor: IReactorTime, max_message: int,
                 compression: bool, close_timeout: float) -> None:  # fmt: skip
        self._request, self._key, self._reactor = request, key, reactor
        self._maxMessage, self._compression = max_message, compression
        self._closeTimeout = close_timeout
        self._head = b""
        self.ws: WebSocketConnection | None = None
        self.opened: defer.Deferred[WebSocketClient] = defer.Deferred()
        self.subprotocol: str | None = None
        self.responseHeaders: dict[str, str] = {}
        self.closeCode: int | None = None
        self.closeReason = ""
        self._messages: deque[str | bytes] = deque()
        self._receivers: deque[defer.Deferred[str | bytes]] = deque()
        self._pings: deque[defer.Deferred[None]] = deque()
        self._closed: defer.Deferred[None] = defer.Deferred()
        self._closeCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self.ws is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._refused(0, f"handshake answer over {MAX_HEAD} bytes")
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            if not self._handshakeDone(head):
                return
            if not data:
                return
        assert self.ws is not None
        for event in self.ws.receive(data):
            cls = event.__class__
            if cls is str or cls is bytes:
                if self._receivers:
                    self._receivers.popleft().callback(event)
                else:
                    self._messages.append(event)
            elif cls is Send:
                self._write(event.data)
            elif cls is Pong:
                if self._pings:
                    self._pings.popleft().callback(None)
            elif cls is Closed:
                self._finish(event.code, event.reason)
                assert self.transport is not None
                self.transport.loseConnection()

    def _handshakeDone(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.responseHeaders = headers
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            self._refused(status, f"the server answered {lines[0]!r}")
            return False
        if headers.get("sec-websocket-accept") != accept_key(self._key):
            self._refused(status, "Sec-WebSocket-Accept does not match the key sent")
            return False
        deflate = None
        extensions = headers.get("sec-websocket-extensions")
        if extensions:
            deflate = PerMessageDeflate.accept(extensions) if self._compression else None
            if deflate is None:
                self._refused(status, f"the server chose extensions not offered: {extensions}")
                return False
            deflate.clientSide = True
        self.subprotocol = headers.get("sec-websocket-protocol")
        self.ws = WebSocketConnection(client_side=True, max_message=self._maxMessage,
                                      deflate=deflate)  # fmt: skip
        self.opened.callback(self)
        return True

    def _refused(self, status: int, text: str) -> None:
        if not self.opened.called:
            self.opened.errback(WebSocketHandshakeError(text, status))
        assert self.transport is not None
        self.transport.loseConnection()

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and self.closeCode is None:
            self.transport.write(data)

    def _finish(self, code: int, reason: str) -> None:
        if self.closeCode is not None:
            return
        self.closeCode, self.closeReason = code, reason
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        error = WebSocketClosedError(code, reason)
        for waiters in (self._receivers, self._pings):
            while waiters:
                waiters.popleft().errback(error)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.ws is None:
            if not self.opened.called:
                self.opened.errback(WebSocketHandshakeError(
                    f"connection closed during the handshake ({reason.getErrorMessage()})", 0
                ))  # fmt: skip
            return
        for event in self.ws.receive_eof():
            self._finish(event.code, event.reason)
        self._finish(self.ws.closeSent[0] if self.ws.closeSent else 1006, "")
        if not self._closed.called:
            self._closed.callback(None)

    # -- the API ------------------------------------------------------------------------------
    def _check(self) -> WebSocketConnection:
        ws = self.ws
        if ws is None or ws.state is not OPEN:
            raise WebSocketClosedError(self.closeCode or 1006, self.closeReason)
        return ws

    def send(self, message: str | bytes) -> None:
        """Send a message: text for ``str``, binary for ``bytes``."""
        self._write(self._check().send(message))

    def receive(self) -> defer.Deferred[str | bytes]:
        """The next message (``str`` or ``bytes``); fails with WebSocketClosedError once the
        connection closed and nothing is left."""
        if self._messages:
            return defer.succeed(self._messages.popleft())
        if self.closeCode is not None or (self.ws is not None and self.ws.state is CLOSED):
            return defer.fail(WebSocketClosedError(self.closeCode or 1006, self.closeReason))
        d: defer.Deferred[str | bytes] = defer.Deferred()
        self._receivers.append(d)
        return d

    def ping(self, payload: bytes = b"") -> defer.Deferred[None]:
        """Send a ping; the Deferred fires when a pong comes back."""
        self._write(self._check().ping(payload))
        d: defer.Deferred[None] = defer.Deferred()
        self._pings.append(d)
        return d

    def close(self, code: int = NORMAL, reason: str = "") -> defer.Deferred[None]:
        """Begin the close handshake (unless it began); fires once the TCP connection is
        closed: after the handshake, or after close_timeout when the connection is dropped."""
        ws = self.ws
        if ws is not None and ws.state is OPEN:
            self._write(ws.close(code, reason))
            self._closeCall = self._reactor.callLater(self._closeTimeout, self._abort)
        elif ws is None and self.transport is not None:
            self.transport.loseConnection()
        if self._closed.called:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()

        def fire(_: None) -> None:
            d.callback(None)

        self._closed.addCallback(fire)
        return d

    def _abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


async def connect(
    url: str,
    *,
    subprotocols: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
    max_message: int = 2 * 1024 * 1024,
    compression: bool = False,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    tls: Any = None,
    reactor: IReactorTime | None = None,
) -> WebSocketClient:
    """Connect to ``url`` (``ws://`` or ``wss://``) and complete the handshake."""
    if reactor is None:
        from tx_swoole.reactor import default_reactor

        reactor = default_reactor()
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]  # fmt: skip
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if compression:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    endpoint: Any = TCP4ClientEndpoint(
        IReactorTCP(reactor), parts.hostname, port, timeout=connect_timeout
    )
    if secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(tls or optionsForClientTLS(parts.hostname), endpoint)
    clock = reactor
    factory = Factory.forProtocol(
        lambda: WebSocketClient(request, key, clock, max_message, compression, close_timeout)
    )
    proto = cast(WebSocketClient, await endpoint.connect(factory))
    opened = proto.opened
    opened.addTimeout(connect_timeout, reactor)
    try:
        return await opened
    except defer.TimeoutError:
        raise WebSocketHandshakeError(f"no handshake answer within {connect_timeout}s", 0) from None
