"""Long-lived TCP connections: a connection table, heartbeat, keepalive and framing.

:class:`ConnectionTable` is a Twisted ``ServerFactory`` that numbers its connections with
integer ids (like Swoole's ``$fd``), applies the socket settings to each accepted socket, runs
one periodic sweep for the heartbeat (one timer per factory, not per connection) and offers
``send``/``close``/``exists``/``getClientInfo``/``listConnections`` by id.

:class:`TCPProtocol` is the class users subclass; override ``connectionOpened``,
``messageReceived`` and ``connectionClosed(reason)``.  With ``open_eof_split`` or
``open_length_check`` on, ``messageReceived`` gets whole messages; otherwise it gets each chunk
as it arrives.

Resource handling: a connection holds at most ``package_max_length`` bytes of partial input
and ``buffer_output_size`` bytes of unsent output; ``max_conn`` bounds the table.  Heartbeat
expiry aborts the connection (RST, pending output dropped) with reason ``heartbeat``.

Error handling: bad framing closes the connection with reason ``limit`` and a WARNING; an
exception in a hook is logged with its traceback and the connection is aborted with reason
``error``; the worker carries on.  Sending to a closed or unknown connection logs at NOTICE
and returns False.
"""

from __future__ import annotations

import inspect
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    ILoggingContext,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ISystemHandle,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import FramingError, NoTaskWorkersError
from tx_swoole.protocols._framing import RawFramer, make_framer
from tx_swoole.settings import Settings, make_settings

log = SwooleLogger("tx_swoole.tcp")

REASONS = ("heartbeat", "peer", "server", "reload", "limit", "error", "handoff")
CONNECTION_DONE = Failure(ConnectionDone())
_LINGER_RST = struct.pack("ii", 1, 0)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
MAX_WAITING = 64  # messages waiting behind an async hook before reading pauses


class _Behind:
    """What waits behind a connection's async hook: messages in order, whether reading was
    paused for them, whether the peer half-closed meanwhile.  Made only when something waits,
    so an idle connection keeps one slot for all of it (``TCPProtocol._busy``)."""

    __slots__ = ("messages", "readPaused", "peerDone")

    def __init__(self) -> None:
        self.messages: deque[Any] = deque()
        self.readPaused = False
        self.peerDone = False


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What :meth:`ConnectionTable.getClientInfo` reports for one connection."""

    conn_id: int
    remote_host: str
    remote_port: int
    connect_time: float
    last_recv_time: float
    bytes_in: int
    bytes_out: int
    worker_id: int = 0  # the worker holding it (for another worker's: address and connect
    # time as it opened; its receive time and byte counts are that worker's to know)
    ssl_client_cert: str | None = None  # (Swoole's) the client's certificate, PEM, over TLS


def socket_options(settings: Settings) -> list[tuple[int, int, int]]:
    """The ``(level, option, value)`` triples the settings ask for on accepted sockets."""
    opts = []
    if settings.open_tcp_nodelay:
        opts.append((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
    if settings.open_tcp_keepalive:
        opts += [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.tcp_keepidle),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.tcp_keepinterval),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.tcp_keepcount),
        ]
    if settings.tcp_user_timeout:
        opts.append((socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, settings.tcp_user_timeout))
    if settings.socket_buffer_size:
        opts += [
            (socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_buffer_size),
            (socket.SOL_SOCKET, socket.SO_RCVBUF, settings.socket_buffer_size),
        ]
    return opts


class IServerTransport(ITCPTransport, ISystemHandle, IConsumer, IPushProducer):
    """What a server connection's transport provides: Twisted's TCP server transport (and
    its TLS and Unix-socket peers) provide these parts.  A make-believe interface, like
    ``twisted.internet._IReactorCommon``."""


def pending_bytes(transport: Any) -> int:
    """Bytes a transport holds unsent (0 for transports that do not say)."""
    pending = getattr(transport, "pendingBytes", None)
    if pending is not None:
        return int(pending())
    buffered = getattr(transport, "dataBuffer", b"")
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


class ITrackedConnection(Interface):
    """What a connection table, and a draining worker, need of a connection in it."""

    connId = Attribute("The connection's id in its table (Swoole's $fd).")
    closing = Attribute("True once the connection is closed or closing.")

    def send(data: bytes) -> bool:  # noqa: N805
        """Queue ``data`` for the peer; False (logged) when refused."""

    def close(reset: bool = False, reason: str = "server") -> bool:  # noqa: N805
        """Close gracefully, or abort with ``reset``; False when already closing."""

    def abort(reason: str) -> None:  # noqa: N805
        """Abort (RST, output dropped) with ``reason``."""

    def byteCounts() -> tuple[int, int]:  # noqa: N805
        """Bytes received from and sent to the peer."""

    def describeState() -> str:  # noqa: N805
        """One word for the connection's state (for deadline warnings)."""

    def drainRequested() -> None:  # noqa: N805
        """The worker is draining (reload or shutdown)."""

    def idleExpired(now: float) -> bool:  # noqa: N805
        """True if the table's periodic sweep at ``now`` should close it."""


@implementer(IProtocol, ILoggingContext, ITrackedConnection)
class TrackedProtocol:
    """A protocol that lives in a :class:`ConnectionTable`; base of our server protocols.

    ``connId`` is its id in the table (0 until connected), ``server`` the factory (also
    ``factory``, as Twisted names it: one slot under both names).  It
    provides ``IProtocol`` itself rather than inheriting ``twisted.internet.protocol.Protocol``,
    which has no ``__slots__``: so the slots below really replace the per-instance ``__dict__``
    (subclasses that declare no ``__slots__`` get one back, as usual).
    """

    __slots__ = (
        "connId", "server", "connectTime", "lastRecvTime", "bytesIn", "bytesOut",
        "_closeReason", "transport", "connected",
    )  # fmt: skip

    def __init__(self) -> None:
        self.connId = 0
        self.server: ConnectionTable = None  # type: ignore[assignment]  # set by its table
        self.transport: IServerTransport = None  # type: ignore[assignment]  # makeConnection
        self.connected = 0
        self.connectTime = 0.0
        self.lastRecvTime = 0.0
        self.bytesIn = 0
        self.bytesOut = 0
        self._closeReason: str | None = None

    @property
    def factory(self) -> ConnectionTable:
        """The table, as ``buildProtocol`` set it (Twisted's name for ``server``)."""
        return self.server

    @factory.setter
    def factory(self, table: ConnectionTable) -> None:
        self.server = table

    def makeConnection(self, transport: ITransport) -> None:
        adopted = self.server.register(self, transport)
        self.connected = 1
        self.transport = transport  # type: ignore[assignment]  # what TCP servers provide
        if adopted is None:
            self.connectionMade()
        else:
            self.connectionResumed(adopted)

    # -- reload_handoff: this connection handed to another worker ---------------------------
    def canHandOff(self) -> bool:
        """Override: False keeps this connection out of a hand-off (it drains as without
        ``reload_handoff``)."""
        return True

    def connectionHandoff(self) -> Any:
        """Override: this connection is about to move to the replacement worker; return the
        app's state for it (anything pickle takes), given to ``connectionAdopted`` there."""
        return None

    def connectionAdopted(self, state: Any) -> Any:
        """Override: this connection came from the worker this one replaces, with ``state``
        from its ``connectionHandoff``; ``self.connId`` is the id it had.  May be async."""

    def handoffReady(self) -> bool | None:
        """True when this connection can move now, False when not yet (a message still being
        handled or sent), None when it cannot move at all (HTTP, closing, the app says no)."""
        return None

    def handoffState(self) -> dict[str, Any]:
        """What the replacement needs to carry on (with :meth:`connectionHandoff`'s value)."""
        now = self.server.seconds()
        return {"connId": self.connId, "age": now - self.connectTime,
                "idle": now - self.lastRecvTime, "bytes": (self.bytesIn, self.bytesOut),
                "app": self.connectionHandoff()}  # fmt: skip

    def connectionResumed(self, state: dict[str, Any]) -> None:
        """Called instead of ``connectionMade`` for a connection handed over (``state`` from
        :meth:`handoffState`)."""

    @property
    def handedOff(self) -> bool:
        """True while its socket moves to another worker, and once it has."""
        return self._closeReason == "handoff"

    def setHandingOff(self, moving: bool) -> None:
        """While its socket moves to another worker (``moving``): closed to sends; back to
        open if the move failed."""
        self._closeReason = "handoff" if moving else None

    def connectionMade(self) -> None:
        """Called once the connection is registered and its transport set."""

    def dataReceived(self, data: bytes) -> None:
        """Override: bytes arrived from the peer."""

    def logPrefix(self) -> str:
        return self.__class__.__name__

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.connected = 0
        self._closeReason = self._closeReason or "peer"
        try:  # as Swoole's onClose: the connection is still in the table during the hook
            self._callClosedHook()
        except Exception:
            log.failure("connectionClosed hook of connection {connId} failed", connId=self.connId)
        self.server.unregister(self)

    def _callClosedHook(self) -> None:
        """Call ``connectionClosed`` with what this kind of connection reports: the close
        reason here (a WebSocket reports its close code and reason instead)."""
        self.connectionClosed(self._closeReason or "peer")

    @property
    def closing(self) -> bool:
        """True once the connection is closed or closing; ``send`` then refuses."""
        return self._closeReason is not None or not self.connected

    def close(self, reset: bool = False, reason: str = "server") -> bool:
        """Close: flush pending output first, or with ``reset=True`` abort with RST.

        Returns False (and logs at NOTICE) when the connection is already closed or closing.
        """
        if self.closing:
            log.notice("close of connection {connId}: already closed", connId=self.connId)
            return False
        self._closeReason = reason
        if reset:
            self._reset()
        else:
            self.transport.loseConnection()
        return True

    def abort(self, reason: str) -> None:
        """Abort with RST and drop pending output (heartbeat, limits, errors)."""
        if self.connected and self._closeReason is None:
            self._closeReason = reason
            self._reset()

    def _reset(self) -> None:
        try:
            sock: socket.socket = self.transport.getHandle()  # type: ignore[assignment]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except (OSError, AttributeError):
            pass
        self.transport.abortConnection()

    def byteCounts(self) -> tuple[int, int]:
        """Bytes received from and sent to the peer so far."""
        return self.bytesIn, self.bytesOut

    def connectionClosed(self, reason: str) -> None:
        """Override: the connection is gone; ``reason`` is one of :data:`REASONS`."""

    def send(self, data: bytes) -> bool:
        """Raw sends go to long connections only (:class:`TCPProtocol`); here: refused."""
        log.notice("send to connection {connId} dropped: it takes no raw sends",
                   connId=self.connId)  # fmt: skip
        return False

    def describeState(self) -> str:
        """Override: one word for the connection's state; default ``open``."""
        return "open" if not self.closing else "closing"

    def drainRequested(self) -> None:
        """Override: the worker is draining (reload or shutdown); default does nothing."""

    def idleExpired(self, now: float) -> bool:
        """Override: True if the sweep at ``now`` should close this connection (HTTP timeouts)."""
        return False


@implementer(IHalfCloseableProtocol)
class TCPProtocol(TrackedProtocol):
    """A long-lived TCP connection; subclass it and override the hooks.

    ``send(data)`` and ``close(reset=False)`` act on this connection; ``self.server`` is the
    :class:`ConnectionTable` for acting on others by id.

    ``connectionOpened`` and ``messageReceived`` may be ``async def`` (or return a Deferred):
    a message is handed over only once the hook before it has finished, so messages are
    handled in order (set ``concurrentMessages = True`` on the class to hand each over at
    once).  While more than :data:`MAX_WAITING` messages wait, reading pauses.  A failing
    hook, sync or async, is logged with its traceback and the connection aborted (reason
    ``error``).

    Half-close: when the peer shuts down its sending side, :meth:`readConnectionLost` is
    called; by default the connection finishes the messages that wait, sends everything
    queued, then closes (reason ``peer``).  Override it to keep sending before you close.
    """

    __slots__ = ("_framer", "_busy")
    concurrentMessages: ClassVar[bool] = False  # True: do not wait for async hooks in turn

    def __init__(self) -> None:
        super().__init__()
        self._framer: Any = None
        # True while an async hook of this connection runs; a _Behind once messages (or the
        # peer's half-close) wait behind it; False otherwise.
        self._busy: bool | _Behind = False

    def connectionMade(self) -> None:
        self._framer = self.server.makeFramer()
        self._runHook(self.connectionOpened, "connectionOpened")

    def dataReceived(self, data: bytes) -> None:
        self.lastRecvTime = self.server.seconds()
        self.bytesIn += len(data)
        if self._closeReason is not None:
            return
        framer = self._framer
        if framer is None:
            messages = [data]
        else:
            try:
                messages = framer.feed(data)
            except FramingError as e:
                log.warn(
                    "connection {connId} from {peer}: {error}; closing (reason limit)",
                    connId=self.connId, peer=self.transport.getPeer(), error=str(e),
                )  # fmt: skip
                self.close(reason="limit")
                return
        self._handOver(messages)

    def _handOver(self, messages: list[Any]) -> None:
        """Deliver ``messages`` in order, waiting behind an async hook still running."""
        if self._busy:
            self._wait(messages)
            return
        for i, message in enumerate(messages):
            if self._closeReason is not None:
                return
            self._deliver(message)
            if self._busy:  # an async hook runs: the rest waits for it
                self._wait(messages[i + 1 :])
                return

    def _deliver(self, message: Any) -> None:
        server = self.server
        server.requestCount += 1
        if server.maxRequestReached is not None:
            server.maxRequestReached()
        self._runHook(self.messageReceived, "messageReceived", message)

    def _runHook(self, hook: Any, name: str, *args: Any) -> None:
        try:
            result = hook(*args)
        except Exception:
            self._hookFailed(Failure(), name)
            return
        if result is None:
            return
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            if not self.concurrentMessages:
                self._busy = True
            result.addCallbacks(self._hookDone, self._hookFailed, errbackArgs=(name,))

    def _hookDone(self, _: Any) -> None:
        if not self.concurrentMessages:
            behind, self._busy = self._busy, False
            if behind.__class__ is _Behind:
                self._drainWaiting(behind)

    def _hookFailed(self, failure: Failure, name: str) -> None:
        log.failure("{hook} of connection {connId} failed", failure, hook=name, connId=self.connId)
        self._busy = False
        self.abort("error")

    def _behind(self) -> _Behind:
        """What waits behind the async hook that runs (made when something first does)."""
        behind = self._busy
        if behind.__class__ is not _Behind:
            behind = self._busy = _Behind()
        return behind

    def _wait(self, messages: list[Any]) -> None:
        if not messages:
            return
        behind = self._behind()
        waiting = behind.messages
        waiting.extend(messages)
        if len(waiting) > MAX_WAITING and not behind.readPaused and self.connected:
            behind.readPaused = True
            self.transport.pauseProducing()

    def _drainWaiting(self, behind: _Behind) -> None:
        """The hook that ran has finished: hand over what waited behind it, in order, until
        another hook goes async (the rest then waits behind that one)."""
        waiting = behind.messages
        while waiting and not self._busy and self._closeReason is None:
            self._deliver(waiting.popleft())
        if behind.readPaused and len(waiting) <= MAX_WAITING // 2:
            behind.readPaused = False
            if self.connected:
                self.transport.resumeProducing()
        if self._busy:  # (what still waits, and the flags, wait behind that hook now)
            self._busy = behind
        elif behind.peerDone and self._closeReason is None:
            self.close(reason="peer")

    def handoffReady(self) -> bool | None:
        busy = self._busy
        if self._closeReason is not None or not self.connected:
            return None
        if busy.__class__ is _Behind and busy.peerDone:
            return None
        transport = self.transport
        if getattr(transport, "encrypted", False) or getattr(transport, "TLS", False):
            return None  # (TLS state lives in this process)
        if not self.canHandOff():
            return None
        return not busy and not pending_bytes(self.transport)

    def handoffState(self) -> dict[str, Any]:
        state = super().handoffState()
        state["framer"] = self._framer.pending() if self._framer is not None else b""
        return state

    def connectionResumed(self, state: dict[str, Any]) -> None:
        self._framer = self.server.makeFramer()
        rest = state.get("framer", b"")
        if rest and self._framer is not None:
            self._framer.feed(rest)  # a message not yet whole: the next bytes complete it
        self._runHook(self.connectionAdopted, "connectionAdopted", state.get("app"))

    def readConnectionLost(self) -> None:
        """The peer will send nothing more (it half-closed).  Default: finish the messages
        that wait, send everything queued, then close with reason ``peer``."""
        if self._busy:
            self._behind().peerDone = True
        elif self._closeReason is None:
            self.close(reason="peer")

    def writeConnectionLost(self) -> None:
        """Our sending side was shut down; nothing to do."""

    def send(self, data: bytes) -> bool:
        """Queue ``data`` for the peer; True if accepted.

        Returns False (logged, never raised) when the connection is closed or closing, or when
        accepting ``data`` would take the unsent bytes past ``buffer_output_size``.  True only
        means the bytes were handed to the kernel or buffered, not that the peer read them.
        """
        if self._closeReason is not None or not self.connected:  # self.closing, inlined
            log.notice("send to closed connection {connId} dropped", connId=self.connId)
            return False
        limit = self.server.bufferOutputSize
        pending = pending_bytes(self.transport)
        if pending + len(data) > limit:
            self.sendRefused(pending, len(data), limit)
            return False
        self.bytesOut += len(data)
        self.transport.write(data)
        return True

    def sendRefused(self, pending: int, size: int, limit: int) -> None:
        """A send was refused for ``buffer_output_size``: logged (every time, for TCP)."""
        log.warn(
            "send to connection {connId} refused: {pending} bytes unsent + {size} > "
            "buffer_output_size={limit}",
            connId=self.connId, pending=pending, size=size, limit=limit,
        )  # fmt: skip

    def connectionOpened(self) -> None:
        """Override: a peer connected; ``self.connId`` is set."""

    def messageReceived(self, data: bytes) -> None:
        """Override: a message (framed) or a chunk (unframed) arrived from the peer."""


class ConnectionTable(ServerFactory):
    """A factory of :class:`TrackedProtocol` connections, numbered and swept.

    Pass the protocol class (a :class:`TCPProtocol` subclass) and the settings (a
    :class:`~tx_swoole.settings.Settings` or a mapping of Swoole-named settings).  ``reactor``
    supplies the clock for the heartbeat sweep.
    """

    noisy = False
    protocol: ClassVar[type[TrackedProtocol]] = TCPProtocol  # type: ignore[misc,assignment]
    sweepEvery: ClassVar[float] = 0.0  # a subclass's own periodic need (HTTP timeouts)

    def __init__(
        self,
        protocol: type[TrackedProtocol] | None = None,
        settings: Settings | dict[str, Any] | None = None,
        *,
        reactor: IReactorTime | None = None,
    ) -> None:
        if reactor is None:
            from tx_swoole.reactor import default_reactor

            reactor = default_reactor()
        if protocol is not None:
            self.protocol = protocol  # type: ignore[misc]
        if not isinstance(settings, Settings):
            settings = make_settings(settings or {})
        self.settings = settings
        self.reactor = reactor
        self.seconds = reactor.seconds
        self.connections: dict[int, TrackedProtocol] = {}
        self.draining = False
        self.requestCount = 0  # messages (tcp) or requests (http) handled
        self.maxRequestReached: Any = None  # called after each one when set (max_request)
        self.bufferOutputSize = settings.buffer_output_size
        #: The service serving this table in a worker (task workers go through it), or None.
        self.service: Any = None
        #: The other workers' connections and the way to them (:mod:`tx_swoole.process.messages`)
        self.peers: Any = None
        #: The other listeners' tables in this worker: ids are looked up there too.
        self.siblings: list[ConnectionTable] = []
        self._nextId = self._firstId = 1
        self._idStride, self._idOffset = 1, 0
        self._sockopts = socket_options(settings)
        self._sockoptFailed = False
        self._refused = 0
        self._refusedLogged = -1.0
        self._checkInterval, self._idleTime = settings.heartbeat
        self._sweeper: task.LoopingCall | None = None
        self._emptyWaiters: list[Deferred[None]] = []
        self._adopting: dict[str, Any] | None = None
        framer = make_framer(settings)
        self._framed = not isinstance(framer, RawFramer)

    @property
    def acceptCount(self) -> int:
        """Connections taken so far (ids are handed out in order)."""
        return self._nextId - self._firstId

    def numberIds(
        self,
        workerId: int,  # noqa: N803
        workerNum: int,  # noqa: N803
        generation: int = 1,
        listener: int = 0,
        listeners: int = 1,
    ) -> None:
        """Number connections ``n * workerNum * listeners + listener * workerNum +
        workerId``, unique across the workers and their listeners (one listener, a worker:
        1, 2, 3...), with ``n`` past every id an earlier generation could have used."""
        workers = max(workerNum, 1)
        self._idStride, self._idOffset = workers * listeners, listener * workers + workerId
        self._nextId = self._firstId = 1 + (generation - 1) * 2**32

    def isShared(self, proto: TrackedProtocol) -> bool:
        """Whether the other workers are told of ``proto`` (every connection of a TCP table)."""
        return True

    # -- the worker's services -----------------------------------------------------------------
    @property
    def workerId(self) -> int:
        return int(self.service.workerId) if self.service is not None else 0

    def stats(self) -> dict[str, Any]:
        """``server.stats()`` (Swoole's keys): the worker's, see
        :meth:`tx_swoole.process.worker.AppService.stats`; this table's alone without one."""
        if self.service is not None:
            return dict(self.service.stats())
        accepted, open_ = self.acceptCount, len(self.connections)
        return {"connection_num": open_, "accept_count": accepted,
                "close_count": accepted - open_, "request_count": self.requestCount}  # fmt: skip

    def sendMessage(self, data: Any, dstWorkerId: int) -> bool:  # noqa: N803
        """``server.sendMessage()`` (Swoole's): see :mod:`tx_swoole.process.messages`."""
        if self.service is None:
            log.notice("sendMessage dropped: no other workers here")
            return False
        return bool(self.service.sendMessage(data, dstWorkerId))

    def task(self, data: Any, dstWorkerId: int = -1, timeout: float | None = None) -> Any:  # noqa: N803
        """``server.task()`` (Swoole's): see :meth:`tx_swoole.process.worker.AppService.task`."""
        if self.service is None:
            return fail(NoTaskWorkersError("task() needs a worker with task workers: set "
                                           "task_worker_num (and [events] task)"))  # fmt: skip
        return self.service.task(data, dstWorkerId, timeout)

    # -- lifecycle --------------------------------------------------------------------------
    def startFactory(self) -> None:
        interval = min(x for x in (self._checkInterval, self.sweepEvery, 1e9) if x > 0)
        if interval < 1e9 and self._sweeper is None:
            self._sweeper = task.LoopingCall(self.sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(interval, now=False)

    def stopFactory(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def makeFramer(self) -> Any:
        """A new framer per the settings, or None for unframed connections."""
        return make_framer(self.settings) if self._framed else None

    def buildProtocol(self, addr: IAddress) -> TrackedProtocol | None:  # type: ignore[override]
        if len(self.connections) >= self.settings.max_conn or self.draining:
            self._refuse(addr)
            return None
        p = self.protocol()
        p.factory = self
        return p

    def _refuse(self, addr: IAddress) -> None:
        self._refused += 1
        now = self.seconds()
        if now - self._refusedLogged >= 1.0:
            log.warn(
                "connection from {addr} closed at accept: {count} open, max_conn={limit} "
                "({refused} refused since the last warning); raise max_conn to accept more",
                addr=addr, count=len(self.connections), limit=self.settings.max_conn,
                refused=self._refused,
            )  # fmt: skip
            self._refused = 0
            self._refusedLogged = now

    def register(self, proto: TrackedProtocol, transport: Any) -> dict[str, Any] | None:
        """Give ``proto`` an id, apply the socket settings and add it to the table.  For a
        connection being adopted (:meth:`adopting`), keep its id, times and byte counts and
        return its state."""
        adopted, self._adopting = self._adopting, None
        if adopted is None:
            proto.connId = self._nextId * self._idStride + self._idOffset
            self._nextId += 1
            proto.connectTime = proto.lastRecvTime = self.seconds()
        else:
            now = self.seconds()
            proto.connId = adopted["connId"]
            proto.connectTime, proto.lastRecvTime = now - adopted["age"], now - adopted["idle"]
            proto.bytesIn, proto.bytesOut = adopted["bytes"]
        self.connections[proto.connId] = proto
        if self._sockopts:
            self._applySocketOptions(transport)
        if self.peers is not None and self.isShared(proto):
            self.peers.localOpened(proto, transport)
        return adopted

    def adopting(self, state: dict[str, Any]) -> None:
        """The next connection built for this table is one handed over, with ``state``."""
        self._adopting = state

    @property
    def handoffProtocol(self) -> type[TrackedProtocol]:
        """The class of the long connections of this table (what a hand-off rebuilds)."""
        return self.protocol

    def replace(self, old: TrackedProtocol, new: TrackedProtocol) -> None:
        """``new`` takes over ``old``'s connection (a protocol upgrade): its id, times and
        byte counts, its place in the table."""
        new.server = self
        new.connId = old.connId
        new.connectTime, new.lastRecvTime = old.connectTime, old.lastRecvTime
        new.bytesIn, new.bytesOut = old.byteCounts()
        self.connections[old.connId] = new
        if self.peers is not None and self.isShared(new) and not self.isShared(old):
            self.peers.localOpened(new, old.transport)

    def unregister(self, proto: TrackedProtocol) -> None:
        """Remove ``proto`` from the table; fires :meth:`whenEmpty` waiters when it empties."""
        if (
            self.connections.pop(proto.connId, None) is not None
            and self.peers is not None
            and not proto.handedOff  # (its new worker says where it is)
        ):
            self.peers.localClosed(proto.connId)
        if not self.connections and self._emptyWaiters:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for d in waiters:
                d.callback(None)

    def _applySocketOptions(self, transport: Any) -> None:
        try:
            sock = transport.getHandle()
        except AttributeError:
            return
        unix = getattr(sock, "family", None) == socket.AF_UNIX  # (no TCP options there)
        for level, opt, value in self._sockopts:
            if unix and level == socket.IPPROTO_TCP:
                continue
            try:
                sock.setsockopt(level, opt, value)
            except OSError as e:
                if not self._sockoptFailed:
                    self._sockoptFailed = True
                    log.warn(
                        "setsockopt({sol}, {opt}, {value}) refused: {error}; carrying on "
                        "without it (check socket_buffer_size and the tcp_* settings)",
                        sol=level, opt=opt, value=value, error=e.strerror,
                    )  # fmt: skip

    # -- periodic sweep -----------------------------------------------------------------------
    def sweep(self) -> None:
        """Abort connections idle past ``heartbeat_idle_time``; apply protocol timeouts."""
        now = self.seconds()
        expired: list[tuple[TrackedProtocol, str]] = []
        if self._idleTime:
            deadline = now - self._idleTime
            expired = [
                (p, "heartbeat") for p in self.connections.values() if p.lastRecvTime < deadline
            ]
        if self.sweepEvery:
            expired += [(p, "server") for p in self.connections.values() if p.idleExpired(now)]
        for p, reason in expired:
            if reason == "heartbeat":
                log.info(
                    "connection {connId} idle {idle:.1f}s > heartbeat_idle_time={limit}: closed",
                    connId=p.connId, idle=now - p.lastRecvTime, limit=self._idleTime,
                )  # fmt: skip
            p.abort(reason)

    # -- by-id API ------------------------------------------------------------------------------
    def local(self, connId: int) -> TrackedProtocol | None:  # noqa: N803
        """Connection ``connId`` if this worker holds it, on this listener or another."""
        p = self.connections.get(connId)
        if p is None:
            for table in self.siblings:
                p = table.connections.get(connId)
                if p is not None:
                    break
        return p

    def exists(self, connId: int) -> bool:
        """True if connection ``connId`` is open (not closed nor closing)."""
        p = self.local(connId)
        if p is None:
            return self.peers is not None and connId in self.peers.remote
        return not p.closing

    def send(self, connId: int, data: bytes) -> bool:
        """Send ``data`` to connection ``connId``; False (logged at NOTICE) if it is gone.
        Another worker's connection: handed to that worker (which logs if it closed
        meanwhile)."""
        p = self.local(connId)
        if p is None:
            if self.peers is not None and connId in self.peers.remote:
                return bool(self.peers.remoteSend(connId, data))
            log.notice("send to unknown connection {connId} dropped", connId=connId)
            return False
        return bool(p.send(data))

    def close(self, connId: int, reset: bool = False) -> bool:
        """Close connection ``connId`` (flushing output, or RST with ``reset``); False if gone."""
        p = self.local(connId)
        if p is None:
            if self.peers is not None and connId in self.peers.remote:
                return bool(self.peers.remoteClose(connId, reset))
            log.notice("close of unknown connection {connId}", connId=connId)
            return False
        return p.close(reset=reset)

    def getClientInfo(self, connId: int) -> ClientInfo | None:
        """Address, times and byte counts of connection ``connId``, or None if unknown."""
        p = self.local(connId)
        if p is None:
            where = self.peers.remote.get(connId) if self.peers is not None else None
            if where is None:
                return None
            return ClientInfo(connId, where.host, where.port, where.connectTime,
                              where.connectTime, 0, 0, where.workerId)  # fmt: skip
        peer = p.transport.getPeer()
        pem = getattr(p.transport, "getPeerCertificatePEM", None)
        return ClientInfo(
            connId, getattr(peer, "host", str(peer)), getattr(peer, "port", 0),
            p.connectTime, p.lastRecvTime, *p.byteCounts(), self.workerId,
            pem() if pem is not None else None,
        )  # fmt: skip

    def listConnections(self) -> list[int]:
        """The ids of the open connections, oldest first (this listener's, the worker's other
        listeners', then the other workers')."""
        if self.siblings or (self.peers is not None and self.peers.remote):
            mine = [c for t in (self, *self.siblings) for c in t.connections]
            return [*mine, *(self.peers.remote if self.peers is not None else ())]
        return list(self.connections)

    # -- draining (reload, shutdown) ----------------------------------------------------------
    def whenEmpty(self) -> Deferred[None]:
        """A Deferred that fires once the table holds no connection."""
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._emptyWaiters.append(d)
        return d

    def startDraining(self) -> None:
        """Refuse new connections and tell every connection the worker is draining."""
        self.draining = True
        for p in list(self.connections.values()):
            p.drainRequested()

    def goAway(self, final: bool = False) -> None:
        """The worker drains and ``worker_exit`` had its chance: ask long connections that
        have a way to say it to go (WebSocket: close 1001).  Plain TCP: nothing."""

    def closeAll(self, reason: str, reset: bool = True) -> None:
        """Close every connection with ``reason`` (RST unless ``reset`` is False)."""
        for p in list(self.connections.values()):
            if reset:
                p.abort(reason)
            elif not p.closing:
                p.close(reason=reason)
