"""WebSocket server: Swoole's ``WebSocket\\Server`` as Twisted glue over a sans-IO core.

``WebSocketFactory(MyProtocol, settings, http_handler=None)`` is an HTTP server
(:class:`~tx_swoole.protocols.http.HTTPFactory`) that upgrades WebSocket handshakes to a new
``MyProtocol`` (a :class:`WebSocketProtocol` subclass) on the same connection, with the same
id in the connection table; other requests go to ``http_handler`` (without one: ``426``).
The frames are the business of :class:`~tx_swoole.protocols._websocket.WebSocketConnection`.

Hooks of :class:`WebSocketProtocol`, plain or ``async def`` (messages are handed over in
order, as for TCP): ``handshake(request)`` (refuse with
:class:`~tx_swoole.errors.WebSocketHandshakeError`, or return the subprotocol chosen),
``connectionOpened(request)``, ``messageReceived(message)`` (``str`` for text, ``bytes`` for
binary), ``pingReceived(payload)``, ``pongReceived(payload)``,
``connectionClosed(code, reason)``.  ``send(message)`` and ``disconnect(code, reason)`` act on
this connection; the factory's ``push``, ``disconnect``, ``isEstablished`` and ``broadcast``
act by connection id.

Resource handling: a message over ``package_max_length`` (after inflation) is refused with
close 1009 before it is buffered; what a slow reader has unsent is bounded by
``buffer_output_size`` (``send`` and ``push`` return False past it); a close we begin is
answered within :data:`CLOSE_TIMEOUT` seconds or the connection is aborted.  Error handling:
a peer's protocol error closes with its code (1002, 1007, 1009) and a reason; a failing hook
is logged and closes with 1011.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import WebSocketHandshakeError
from tx_swoole.protocols._http11_head import status_line
from tx_swoole.protocols._websocket import (
    CLOSED,
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    OPEN,
    POLICY,
    Closed,
    CloseFrame,
    PerMessageDeflate,
    Ping,
    Pong,
    Send,
    WebSocketConnection,
    accept_key,
    frame,
)
from tx_swoole.protocols.http import HTTPFactory, HTTPProtocol, Request, Response
from tx_swoole.protocols.tcp import CONNECTION_DONE, TCPProtocol, pending_bytes
from tx_swoole.settings import Settings

__all__ = [
    "CLOSE_TIMEOUT",
    "CloseFrame",
    "Ping",
    "Pong",
    "WebSocketFactory",
    "WebSocketProtocol",
    "is_websocket_request",
    "protocol_of_functions",
]
log = SwooleLogger("tx_swoole.websocket")
CLOSE_TIMEOUT = 5.0  # seconds the peer has to answer a close we sent
# Bytes a WebSocket connection reads at a time: twice Twisted's 64 KiB, so that a 64 KiB
# message and its frame header come in one read instead of two (larger reads cost more than
# they save: CPython allocates the whole size for each).
READ_SIZE = 128 * 1024
_101 = status_line(101)


def is_websocket_request(request: Request) -> bool:
    """True for a request asking to upgrade to WebSocket."""
    headers = request.headers
    upgrade = (headers.get("upgrade") or "").lower()
    tokens = {t.strip().lower() for t in (headers.get("connection") or "").split(",")}
    return upgrade == "websocket" and "upgrade" in tokens


class WebSocketProtocol(TCPProtocol):
    """One WebSocket connection; subclass it and override the hooks (module docstring)."""

    __slots__ = (
        "ws", "request", "closeCode", "closeText", "_closeCall", "_replyUnsent", "_pingSent",
        "_overSince",
    )  # fmt: skip
    server: WebSocketFactory
    factory: WebSocketFactory
    keepRequest: ClassVar[bool] = False  # True: self.request stays after connectionOpened

    def __init__(self) -> None:
        super().__init__()
        #: The sans-IO core, once the handshake is accepted.
        self.ws: WebSocketConnection = None  # type: ignore[assignment]
        #: The handshake request (headers, path, cookies, remote address), during the
        #: handshake and connectionOpened; afterwards too with ``keepRequest = True``.
        self.request: Request = None  # type: ignore[assignment]
        self.closeCode = 1006  # what connectionClosed gets
        self.closeText = ""
        self._closeCall: IDelayedCall | None = None
        self._replyUnsent = False  # the peer's close is parsed, our reply not yet written
        self._pingSent = False  # a heartbeat ping is waiting for its pong
        self._overSince: float | None = None  # when a send was first refused for the limit

    # -- hooks --------------------------------------------------------------------------------
    def handshake(self, request: Request) -> str | None | Any:
        """Override: check the handshake (``Origin``, a token...).  Raise
        :class:`~tx_swoole.errors.WebSocketHandshakeError` to refuse it with a status; return
        the subprotocol chosen from ``Sec-WebSocket-Protocol``, or None.  May be async."""
        return None

    def connectionOpened(self, request: Request) -> Any:  # type: ignore[override]
        """Override: the handshake is done; ``self.connId`` is set."""

    def messageReceived(self, message: str | bytes) -> Any:
        """Override: a whole message (``str`` for text, ``bytes`` for binary); also the
        :class:`Ping`, :class:`Pong` and :class:`CloseFrame` frames that Swoole's
        ``open_websocket_ping_frame``, ``_pong_frame`` and ``_close_frame`` settings ask for."""

    def pingReceived(self, payload: bytes) -> None:
        """Override: a ping arrived (the pong is already sent); with
        ``open_websocket_ping_frame`` the ping goes to :meth:`messageReceived` instead."""

    def pongReceived(self, payload: bytes) -> None:
        """Override: a pong arrived (unless ``open_websocket_pong_frame`` sends it to
        :meth:`messageReceived`)."""

    def connectionClosed(self, code: int, reason: str) -> None:  # type: ignore[override]
        """Override: the connection is gone; ``code``/``reason`` from the close handshake
        (1006 when it ended without one)."""

    # -- the connection -----------------------------------------------------------------------
    def accept(self, request: Request, deflate: PerMessageDeflate | None) -> None:
        """Start speaking WebSocket (the factory calls it once the 101 is sent)."""
        self.request = request
        s = self.server.settings
        self.ws = WebSocketConnection(
            max_message=s.package_max_length, deflate=deflate,
            auto_pong=not s.open_websocket_ping_frame, close_frames=s.open_websocket_close_frame,
        )  # fmt: skip

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if getattr(transport, "bufferSize", 0) == 65536:  # a TCP socket's: read more at once
            transport.bufferSize = READ_SIZE
        request = self.request
        self._runHook(self.connectionOpened, "connectionOpened", request)
        if not self.keepRequest:  # as Swoole's onOpen: the request is the open hook's
            self.request = None  # type: ignore[assignment]  # (about 1.4 KB per connection)
        else:
            request.cache = None  # its parsed views are rebuilt if asked for

    def dataReceived(self, data: bytes) -> None:
        self.lastRecvTime = self.server.seconds()
        self.bytesIn += len(data)
        events = self.ws.receive(data)
        if len(events) == 1 and not self._busy and self._closeReason is None:
            cls = events[0].__class__
            if cls is str or cls is bytes:  # the common case: one message in this read
                self._deliver(events[0])
                return
        messages: list[Any] = []
        frames = self.server.frameEvents
        for event in events:
            cls = event.__class__
            if cls is Pong:
                self._pingSent = False
            if cls is str or cls is bytes or cls in frames:
                messages.append(event)
                continue
            if messages:  # in order: what came before a control frame is handled first
                # (its answers go out before our reply to the peer's close, if that is next)
                self._replyUnsent = cls is Send and self.ws.state is CLOSED
                self._handOver(messages)
                self._replyUnsent = False
                messages = []
            if cls is Send:
                self._write(event.data)
            elif cls is Ping:
                self._safely(self.pingReceived, event.payload)
            elif cls is Pong:
                self._safely(self.pongReceived, event.payload)
            elif cls is Closed:
                self._closed(event)
        if messages and self._closeReason is None:
            self._handOver(messages)

    def _safely(self, hook: Callable[[bytes], Any], payload: bytes) -> None:
        try:
            hook(payload)
        except Exception:
            log.failure("{hook} of connection {connId} failed", hook=hook.__name__,
                        connId=self.connId)  # fmt: skip

    def _closed(self, event: Closed) -> None:
        """The close handshake completed, or the peer broke the protocol: close the TCP
        connection (the server closes first, RFC 6455 section 7.1.1)."""
        self.closeCode, self.closeText = event.code, event.reason
        if not event.clean:
            log.info("connection {connId}: closing with {code} ({reason})",
                     connId=self.connId, code=event.code, reason=event.reason)  # fmt: skip
        self._cancelCloseTimer()
        if self._closeReason is None:  # the peer closed, or broke the protocol (a limit: 1009)
            self._closeReason = (
                "peer" if event.clean else "limit" if event.code == 1009 else "error"
            )
        if self.connected:
            self.transport.loseConnection()

    def _write(self, data: bytes) -> None:
        if data and self.connected:
            self.bytesOut += len(data)
            self.transport.write(data)

    def send(self, message: str | bytes | Ping) -> bool:
        """Send a message (text for ``str``, binary for ``bytes``; a :class:`Ping` or
        :class:`Pong` frame); False (logged) when the
        connection is closing or more than ``buffer_output_size`` is unsent."""
        ws = self.ws
        if self._replyUnsent:  # answering a message that came just before the peer's close
            return self._sendFrame(ws.encode(message))
        if ws is None or ws.state is not OPEN or self._closeReason is not None:
            log.notice("push to closed WebSocket connection {connId} dropped", connId=self.connId)
            return False
        return self._sendFrame(ws.send(message))

    def _sendFrame(self, data: bytes) -> bool:
        if TCPProtocol.send(self, data):
            self._overSince = None
            return True
        return False

    def sendRefused(self, pending: int, size: int, limit: int) -> None:
        """Over ``buffer_output_size``: logged once until the reader catches up; after
        ``websocket_send_timeout`` the heartbeat closes it with 1008."""
        if self._overSince is None:
            self._overSince = self.server.seconds()
            log.warn(
                "push to connection {connId} refused: {pending} bytes unsent + {size} > "
                "buffer_output_size={limit} (logged once until it catches up)",
                connId=self.connId, pending=pending, size=size, limit=limit,
            )  # fmt: skip

    def sendFrame(self, data: bytes) -> bool:
        """Send an already encoded frame (what :meth:`WebSocketFactory.broadcast` shares)."""
        if self.ws is None or self.ws.state is not OPEN or self._closeReason is not None:
            return False
        return self._sendFrame(data)

    def heartbeat(self, now: float, ping: bool, sendTimeout: float) -> None:
        """The factory's periodic check: ping (closing a connection that did not answer the
        last ping), and close with 1008 a reader stuck past ``buffer_output_size``."""
        ws = self.ws
        if ws is None or ws.state is not OPEN or self.closing:
            return
        if sendTimeout and self._overSince is not None:
            if pending_bytes(self.transport) <= self.server.bufferOutputSize:
                self._overSince = None
            elif now - self._overSince >= sendTimeout:
                log.info("connection {connId}: more than buffer_output_size={limit} unsent for "
                         "websocket_send_timeout={t}s; closing with 1008", connId=self.connId,
                         limit=self.server.bufferOutputSize, t=sendTimeout)  # fmt: skip
                self.disconnect(POLICY, "reading too slowly")
                return
        if ping:
            if self._pingSent:
                log.info("connection {connId}: no pong within websocket_ping_interval; closing",
                         connId=self.connId)  # fmt: skip
                self.abort("heartbeat")
                return
            self._pingSent = True
            self._write(ws.ping())

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping; its pong comes to :meth:`pongReceived`."""
        self._write(self.ws.ping(payload))

    def pong(self, payload: bytes = b"") -> None:
        """Send a pong: the answer to a ping with ``open_websocket_ping_frame = true``."""
        self._write(self.ws.pong(payload))

    def disconnect(self, code: int = NORMAL, reason: str = "") -> bool:
        """Begin the close handshake with ``code`` and ``reason``; the TCP connection closes
        when the peer answers (or after :data:`CLOSE_TIMEOUT`).  False if already closing."""
        ws = self.ws
        if ws is None or ws.state is not OPEN or not self.connected:
            return False
        self.closeCode, self.closeText = code, reason
        self._closeReason = self._closeReason or "server"
        self._beginClose(code, reason)
        return True

    def _beginClose(self, code: int, reason: str) -> None:
        """Send our close frame; abort if the answer is not in within CLOSE_TIMEOUT."""
        self._write(self.ws.close(code, reason))
        clock: IReactorTime = self.server.reactor
        self._closeCall = clock.callLater(CLOSE_TIMEOUT, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._closeCall = None
        if self.connected:
            log.info("connection {connId}: no answer to our close within {t}s; aborting",
                     connId=self.connId, t=CLOSE_TIMEOUT)  # fmt: skip
            self._reset()  # (abort() would not: the close already began)

    def _cancelCloseTimer(self) -> None:
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        self._closeCall = None

    def close(self, reset: bool = False, reason: str = "server") -> bool:
        """The table's close: a close handshake (1000; 1001 while the worker drains), or
        RST with ``reset``."""
        if reset or self.ws is None or self.ws.state is not OPEN:
            return super().close(reset=reset, reason=reason)
        if self.closing:
            return False
        self._closeReason = reason
        self._beginClose(GOING_AWAY if self.server.goingAway else NORMAL, "")
        return True

    def abort(self, reason: str) -> None:
        self._cancelCloseTimer()
        super().abort(reason)

    def _hookFailed(self, failure: Failure, name: str) -> None:
        log.failure("{hook} of connection {connId} failed", failure, hook=name, connId=self.connId)
        self._busy = False
        self.disconnect(INTERNAL, f"{name} failed")

    # -- reload_handoff ----------------------------------------------------------------------
    def handoffReady(self) -> bool | None:
        ws = self.ws
        if ws is None or not ws.atMessageBoundary() or self._closeCall is not None:
            return None  # (compressed connections too: the compressor lives here)
        return super().handoffReady()

    def handoffState(self) -> dict[str, Any]:
        state = super().handoffState()
        state["ws"] = (self.ws.bytesIn, self.ws.bytesOut, self._pingSent)
        return state

    def connectionResumed(self, state: dict[str, Any]) -> None:
        transport: Any = self.transport
        if getattr(transport, "bufferSize", 0) == 65536:
            transport.bufferSize = READ_SIZE
        s = self.server.settings
        self.ws = WebSocketConnection(
            max_message=s.package_max_length, auto_pong=not s.open_websocket_ping_frame,
            close_frames=s.open_websocket_close_frame,
        )  # fmt: skip
        self.ws.bytesIn, self.ws.bytesOut, self._pingSent = state["ws"]
        self._runHook(self.connectionAdopted, "connectionAdopted", state.get("app"))

    def readConnectionLost(self) -> None:
        """The peer half-closed: nothing more can come, its close included; close."""
        self._closeReason = self._closeReason or "peer"
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        if not self.connected:
            return
        self._cancelCloseTimer()
        if self.ws is not None:
            for event in self.ws.receive_eof():
                self.closeCode, self.closeText = event.code, event.reason
        super().connectionLost(reason)

    def _callClosedHook(self) -> None:
        if self.handedOff:  # it lives on in the replacement worker
            self.connectionClosed(GOING_AWAY, "handoff")
            return
        self.connectionClosed(self.closeCode, self.closeText)

    def describeState(self) -> str:
        if self.ws is None or self.ws.state is OPEN:
            return "websocket"
        return "websocket closing" if self.ws.state is not CLOSED else "closed"

    def drainRequested(self) -> None:
        """The worker drains: once ``worker_exit`` had its chance, close with 1001."""
        if self.server.goingAway and self.ws is not None and self.ws.state is OPEN:
            self.close(reason="reload" if not self.server.finalDrain else "server")

    def byteCounts(self) -> tuple[int, int]:
        return self.bytesIn, self.bytesOut


class WebSocketFactory(HTTPFactory):
    """An HTTP server that upgrades WebSocket handshakes to ``protocol`` (module docstring).

    ``settings["websocket_compression"]``: accept permessage-deflate offers.
    """

    def __init__(
        self,
        protocol: type[WebSocketProtocol],
        settings: Settings | dict[str, Any] | None = None,
        http_handler: Callable[[Request, Response], Any] | None = None,
        *,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(self._route, settings, reactor=reactor)
        self.wsProtocol = protocol
        self.httpHandler = http_handler
        self.goingAway = False  # the worker asked long connections to go (reload, shutdown)
        self.finalDrain = False
        s = self.settings
        self._heartbeat: task.LoopingCall | None = None
        self._pingEvery = s.websocket_ping_interval
        checks = [x for x in (s.websocket_ping_interval, s.websocket_send_timeout / 4) if x]
        self._heartbeatEvery = min(checks) if checks else 0.0  # one pass over the connections
        self._lastPing = 0.0
        #: The control frames handed to the message hook (Swoole's open_websocket_*_frame).
        self.frameEvents = frozenset(
            kind for kind, on in ((Ping, s.open_websocket_ping_frame),
                                  (Pong, s.open_websocket_pong_frame),
                                  (CloseFrame, s.open_websocket_close_frame)) if on
        )  # fmt: skip

    def startFactory(self) -> None:
        super().startFactory()
        if self._heartbeatEvery and self._heartbeat is None:
            self._heartbeat = task.LoopingCall(self.heartbeat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(self._heartbeatEvery, now=False)

    def stopFactory(self) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        super().stopFactory()

    @property
    def handoffProtocol(self) -> type[WebSocketProtocol]:
        return self.wsProtocol

    def heartbeat(self) -> None:
        """Pings every ``websocket_ping_interval``; the slow-reader check."""
        now = self.seconds()
        ping = bool(self._pingEvery) and now - self._lastPing >= self._pingEvery - 1e-6
        if ping:
            self._lastPing = now
        timeout = self.settings.websocket_send_timeout
        for p in list(self.connections.values()):
            if isinstance(p, WebSocketProtocol):
                p.heartbeat(now, ping, timeout)

    # -- the handshake ------------------------------------------------------------------------
    def _route(self, request: Request, response: Response) -> Any:
        if request.upgrade and is_websocket_request(request):
            return self._handshake(request, response)
        if self.httpHandler is not None:
            return self.httpHandler(request, response)
        response.status(426)
        response.header("Upgrade", "websocket")
        response.header("Content-Type", "text/plain")
        return response.end("this is a WebSocket server: send a WebSocket handshake\n")

    def _handshake(self, request: Request, response: Response) -> Any:
        problem = self._invalid(request)
        if problem is not None:
            status, text = problem
            return self._refuseHandshake(response, status, text)
        proto = self.wsProtocol()
        proto.server = self
        try:
            chosen = proto.handshake(request)
        except WebSocketHandshakeError as e:
            return self._refuseHandshake(response, e.status, str(e))
        if inspect.isawaitable(chosen) or isinstance(chosen, defer.Deferred):
            return self._handshakeLater(chosen, proto, request, response)
        return self._upgrade(proto, request, response, chosen)

    async def _handshakeLater(self, pending: Any, proto: WebSocketProtocol, request: Request,
                              response: Response) -> None:  # fmt: skip
        try:
            chosen = await pending
        except WebSocketHandshakeError as e:
            self._refuseHandshake(response, e.status, str(e))
            return
        self._upgrade(proto, request, response, chosen)

    @staticmethod
    def _invalid(request: Request) -> tuple[int, str] | None:
        if request.method != "GET" or request.version != "1.1":
            return 400, "a WebSocket handshake is a GET over HTTP/1.1"
        version = request.headers.get("sec-websocket-version")
        if version != "13":
            return 426, f"Sec-WebSocket-Version {version!r} is not supported (13 is)"
        key = request.headers.get("sec-websocket-key") or ""
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError(key)
        except (ValueError, binascii.Error):
            return 400, "Sec-WebSocket-Key is not 16 bytes in base64"
        return None

    @staticmethod
    def _refuseHandshake(response: Response, status: int, text: str) -> bool:
        log.info("WebSocket handshake refused with {status}: {text}", status=status, text=text)
        response.status(status)
        if status == 426:
            response.header("Sec-WebSocket-Version", "13")
        response.header("Content-Type", "text/plain")
        return response.end(text + "\n")

    def _upgrade(self, proto: WebSocketProtocol, request: Request, response: Response,
                 subprotocol: str | None) -> None:  # fmt: skip
        owner = request.owner
        if not isinstance(owner, HTTPProtocol) or not owner.connected or response.ended:
            return
        headers = [
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
            accept_key(request.headers.get("sec-websocket-key") or "").encode(), b"\r\n",
        ]  # fmt: skip
        if subprotocol:
            headers += [b"Sec-WebSocket-Protocol: ", subprotocol.encode(), b"\r\n"]
        deflate = None
        if self.settings.websocket_compression:
            deflate = PerMessageDeflate.accept(request.headers.get("sec-websocket-extensions"))
            if deflate is not None:
                headers += [b"Sec-WebSocket-Extensions: ", deflate.response().encode(), b"\r\n"]
        head = b"".join([_101, self.defaultHeaders, *headers, b"\r\n"])
        proto.accept(request, deflate)
        owner.switchProtocol(response, head, proto)

    # -- by connection id ---------------------------------------------------------------------
    def _ws(self, connId: int) -> WebSocketProtocol | None:
        p = self.local(connId)
        return p if isinstance(p, WebSocketProtocol) and p.ws is not None else None

    def isShared(self, proto: Any) -> bool:
        """The other workers hear of a connection once it is a WebSocket."""
        return isinstance(proto, WebSocketProtocol)

    def isEstablished(self, connId: int) -> bool:
        """True if ``connId`` is a WebSocket connection past its handshake and not closing
        (another worker's: past its handshake and not closed, as far as this one knows)."""
        p = self._ws(connId)
        if p is None:
            return self.peers is not None and connId in self.peers.remote
        return p.ws.state is OPEN and not p.closing

    def push(self, connId: int, data: str | bytes | Ping) -> bool:
        """Send a message to WebSocket connection ``connId``; False (logged) if it is not one,
        is gone or closing, or has more than ``buffer_output_size`` unsent."""
        p = self._ws(connId)
        if p is None:
            if self.peers is not None and connId in self.peers.remote:
                return bool(self.peers.remotePush(connId, data))
            log.notice("push to connection {connId} dropped: no such WebSocket connection",
                       connId=connId)  # fmt: skip
            return False
        return p.send(data)

    def disconnect(self, connId: int, code: int = NORMAL, reason: str = "") -> bool:
        """Close WebSocket connection ``connId`` with a close frame; False if it is not one."""
        p = self._ws(connId)
        if p is None and self.peers is not None and connId in self.peers.remote:
            return bool(self.peers.remoteDisconnect(connId, code, reason))
        return p is not None and p.disconnect(code, reason)

    def broadcast(
        self, data: str | bytes, connIds: Iterable[int] | None = None, local: bool = False
    ) -> int:
        """Send ``data`` to every established WebSocket connection of the server, every
        worker's (or to those of ``connIds``; ``local``: this worker's only): the frame is
        encoded once per worker.  Returns how many accepted it (for other workers': how many
        they hold)."""
        if isinstance(data, str):
            shared = frame(0x1, data.encode())
        else:
            shared = frame(0x2, bytes(data))
        if connIds is None:  # every listener's (the other tables' are not WebSocket ones)
            ids: Iterable[int] = [c for t in (self, *self.siblings) for c in t.connections]
        else:
            ids = connIds
        sent = 0
        if connIds is None and not local and self.peers is not None:
            sent += self.peers.remoteBroadcast(data)
        for connId in list(ids):
            p = self._ws(connId)
            if p is None:
                if connIds is not None and self.peers is not None and connId in self.peers.remote:
                    sent += self.peers.remotePush(connId, data)
                continue
            if p.ws.deflate is not None:
                sent += p.send(data)
            else:
                sent += p.sendFrame(shared)
        return sent

    def goAway(self, final: bool = False) -> None:
        """After ``worker_exit`` had its chance: close every WebSocket with 1001."""
        self.goingAway = True
        self.finalDrain = final
        for p in list(self.connections.values()):
            p.drainRequested()


def protocol_of_functions(functions: dict[str, Callable[..., Any]]) -> type[WebSocketProtocol]:
    """A protocol class calling Swoole-style functions (from ``[events]``):
    ``handshake(request)`` (a subprotocol, or raise WebSocketHandshakeError),
    ``open(server, connId, request)``, ``message(server, connId, message)``,
    ``close(server, connId, code, reason)``; each may be async."""
    handshake, opened = functions.get("handshake"), functions.get("open")
    message, closed = functions["message"], functions.get("close")

    class FunctionProtocol(WebSocketProtocol):
        def handshake(self, request: Request) -> Any:
            return None if handshake is None else handshake(request)

        def connectionOpened(self, request: Request) -> Any:  # type: ignore[override]
            return None if opened is None else opened(self.server, self.connId, request)

        def messageReceived(self, data: str | bytes) -> Any:
            return message(self.server, self.connId, data)

        def connectionClosed(self, code: int, reason: str) -> None:  # type: ignore[override]
            if closed is not None:
                result = closed(self.server, self.connId, code, reason)
                if inspect.isawaitable(result) or isinstance(result, defer.Deferred):
                    defer.ensureDeferred(_awaited(result)).addErrback(
                        lambda f: log.failure("close function failed", f)
                    )

    FunctionProtocol.__name__ = FunctionProtocol.__qualname__ = f"FunctionsOf_{message.__name__}"
    return FunctionProtocol


async def _awaited(result: Any) -> Any:
    return await result
