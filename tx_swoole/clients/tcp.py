"""A long-connection TCP client with the server's framing, for any Twisted program.

``client = TCPClient("127.0.0.1", 9501, settings={"open_length_check": True})`` connects
lazily on first use.  The framing settings have the server's names and meaning
(``open_eof_split``/``package_eof``, ``open_length_check``/``package_length_type``/
``package_length_offset``/``package_body_offset``, ``package_max_length``), as do the socket
options (``open_tcp_nodelay``, ``open_tcp_keepalive``/``tcp_keepidle``/...).  Two styles:

- **request/response**: ``reply = await client.request(msg)`` sends and waits for the next
  message; concurrent requests are queued in order, each gets the reply to its own message.
  ``await client.send(msg)`` and ``await client.recv(timeout=...)`` are the two halves; one
  ``recv()`` may wait at a time (a second is refused with :class:`TCPBusyError`: use
  ``request()``, or one client per concurrent caller).
- **callbacks**: subclass and override ``messageReceived(message)`` (plain or async), or pass
  ``on_message=``; every message then goes there and ``recv()`` is refused.

**There is no ``connected`` flag.**  Whether a connection is up is only known from the last I/O:
``closedReason`` is the error the last I/O ended with (None while nothing has said the
connection is gone), and the next ``send``/``request``/``recv`` raises it or reconnects.

Resource handling: one connection; with ``reconnect=True`` Twisted's ``ClientService`` keeps it,
reconnecting after a loss with jittered exponential back-off (0.1 s doubling to 10 s); while
backing off, calls fail at once with the last connect error rather than hang.  Messages nobody
has asked for yet are kept up to ``max_queued`` (then reading pauses until they are taken);
``heartbeat_idle_time`` sends ``heartbeat_ping`` after that many idle seconds, and if
``heartbeat_pong`` is set, pongs are not delivered and a ping unanswered within
``read_timeout`` closes the connection.  ``await client.close()`` ends everything.

Error handling: :class:`~tx_swoole.errors.TCPConnectError` (refused: "nothing listens on
HOST:PORT"; timed out; other), :class:`~tx_swoole.errors.TCPTimeoutError` ("no data from
HOST:PORT within 2.0 s"), :class:`~tx_swoole.errors.TCPClosedError` (closed by the peer, or
lost), :class:`~tx_swoole.errors.TCPMessageTooLargeError` (over ``package_max_length``: the
connection is closed, since the stream cannot be resynchronised).  A ``request()`` past its
timeout closes the connection too, so that its late reply reaches no other caller.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tx_swoole._log import SwooleLogger
from tx_swoole.clients import _base
from tx_swoole.clients._base import client_endpoint, connect_failure, fast_write
from tx_swoole.errors import (
    FrameTooLargeError,
    FramingError,
    TCPBusyError,
    TCPClientError,
    TCPClosedError,
    TCPConnectError,
    TCPMessageTooLargeError,
    TCPTimeoutError,
    TCPWrongProcessError,
)
from tx_swoole.protocols._framing import RawFramer, make_framer
from tx_swoole.protocols.tcp import socket_options
from tx_swoole.settings import Settings, make_settings

__all__ = ["TCPClient", "TCPClientProtocol"]
log = SwooleLogger("tx_swoole.tcp.client")
_NEVER = float("inf")
# The settings a client takes: framing, limits and the socket options.
CLIENT_SETTINGS = (
    "open_eof_split", "package_eof", "open_length_check", "package_length_type",
    "package_length_offset", "package_body_offset", "package_max_length", "open_tcp_nodelay",
    "open_tcp_keepalive", "tcp_keepidle", "tcp_keepinterval", "tcp_keepcount",
    "tcp_user_timeout", "socket_buffer_size",
)  # fmt: skip


def connect_error(e: BaseException, address: str, timeout: float) -> TCPClientError:
    """The client error for a failed connect, saying what to check."""
    if isinstance(e, TCPClientError):
        return e
    return TCPConnectError(connect_failure(e, address, timeout)[1])


class TCPClientProtocol(Protocol):
    """One connection of a :class:`TCPClient`: socket options, framing, and hand-over."""

    def __init__(self, client: TCPClient) -> None:
        self.client = client
        self.framer: Any = make_framer(client.settings)
        if isinstance(self.framer, RawFramer):
            self.framer = None
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.write: Callable[[bytes], None] = lambda data: None  # set when connected

    def connectionMade(self) -> None:
        self.write = fast_write(self.transport)
        handle = getattr(self.transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if sock is not None and hasattr(sock, "setsockopt") and self.client.unixSocket is None:
            for level, option, value in socket_options(self.client.settings):
                sock.setsockopt(level, option, value)
        self.client.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        client.lastRead = client.reactor.seconds()
        if self.framer is None:
            client.messageArrived(data)
            return
        try:
            messages = self.framer.feed(data)
        except FrameTooLargeError as e:
            self.abort(TCPMessageTooLargeError(
                f"message from {client.address} over package_max_length="
                f"{client.settings.package_max_length} ({e.size} bytes); raise "
                "package_max_length if such messages are expected"))  # fmt: skip
            return
        except FramingError as e:
            self.abort(TCPClosedError(f"{client.address}: {e}; connection closed"))
            return
        for message in messages:
            if self.transport is None:
                return
            client.messageArrived(message)

    def abort(self, reason: TCPClientError) -> None:
        self.client.connectionFailed(self, reason)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self.client.connectionLost(self, reason)
        # Fired on the next turn: ClientService hears of the loss after this method returns.
        self.client.reactor.callLater(0, self.lost.callback, None)


@implementer(IStreamClientEndpoint)
class _RecordingEndpoint:
    """An endpoint that tells the client how each connect attempt ended."""

    def __init__(self, endpoint: Any, client: TCPClient) -> None:
        self.endpoint, self.client = endpoint, client

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = self.endpoint.connect(factory)
        d.addErrback(self.client.connectFailed)
        return d


class TCPClient:
    """A framed long connection; see the module docstring.

    ``host``/``port``, or ``unix_socket`` (a path); ``tls``: an
    ``IOpenSSLClientConnectionCreator`` (``optionsForClientTLS(host)``).  ``settings``: the
    server's framing and socket setting names (a mapping, checked like ``[settings]``).
    Timeouts are seconds (0: none).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9501,
        *,
        unix_socket: str | None = None,
        tls: Any = None,
        settings: Mapping[str, Any] | Settings | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        heartbeat_idle_time: float = 0.0,
        heartbeat_ping: bytes = b"",
        heartbeat_pong: bytes | None = None,
        reconnect: bool = True,
        max_queued: int = 1024,
        on_message: Callable[[bytes], Any] | None = None,
        reactor: IReactorTime | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = cast(IReactorTime, default)
        if isinstance(settings, Settings):
            self.settings = settings
        else:
            values = dict(settings or {})
            unknown = sorted(set(values) - set(CLIENT_SETTINGS))
            if unknown:
                raise ValueError(f"TCPClient settings {unknown}: a client takes only "
                                 f"{', '.join(CLIENT_SETTINGS)}")  # fmt: skip
            self.settings = make_settings(values)
        if heartbeat_idle_time and not heartbeat_ping:
            raise ValueError("heartbeat_idle_time needs heartbeat_ping (the bytes to send)")
        self.reactor = reactor
        self.host, self.port, self.unixSocket, self.tls = host, port, unix_socket, tls
        self.address = f"unix:{unix_socket}" if unix_socket else f"{host}:{port}"
        self.connectTimeout = connect_timeout
        self.readTimeout = read_timeout
        self.heartbeatIdleTime = heartbeat_idle_time
        self.heartbeatPing, self.heartbeatPong = heartbeat_ping, heartbeat_pong
        self.reconnect = reconnect
        self.maxQueued = max_queued
        if on_message is not None:
            self.messageReceived = on_message  # type: ignore[method-assign,assignment]
        self._callbacks = on_message is not None or (
            type(self).messageReceived is not TCPClient.messageReceived
        )
        self.protocol: TCPClientProtocol | None = None
        self.closedReason: TCPClientError | None = None
        self.lastRead = self.lastWrite = 0.0
        self._inbox: deque[bytes] = deque()
        self._waiters: deque[list[Any]] = deque()  # see _queue
        self._sweepInterval = min(read_timeout / 4, 1.0) if read_timeout else 1.0
        self._sweeper: task.LoopingCall | None = None
        self._paused = False
        self._service: ClientService | None = None
        self._connecting: defer.Deferred[Any] | None = None
        self._connectWaiters: list[defer.Deferred[Any]] = []
        self._lastError: TCPClientError | None = None
        self._pingSent = 0.0
        self._heartbeat: task.LoopingCall | None = None
        self._closed = False
        self._fork = _base.GENERATION
        self._pid = os.getpid()

    def __reduce__(self) -> Any:
        raise TCPWrongProcessError(
            "a TCPClient cannot be sent to another process: create it in worker_start"
        )

    def messageReceived(self, message: bytes) -> Any:  # noqa: N802
        """Called with each message when overridden (or given as ``on_message``)."""
        raise NotImplementedError  # not called: without an override messages queue for recv()

    # -- connecting ----------------------------------------------------------------------------
    def _endpoint(self) -> Any:
        return client_endpoint(self.reactor, self.host, self.port, self.unixSocket, self.tls,
                               self.connectTimeout)  # fmt: skip

    def _check(self) -> None:
        if self._closed:
            raise TCPClosedError(f"client for {self.address} is closed")
        if self._fork != _base.GENERATION:
            raise TCPWrongProcessError(_base.advice("TCPClient", self.address, self._pid))

    async def connect(self) -> TCPClientProtocol:
        """The open connection, connecting (or waiting for the reconnect) if there is none."""
        self._check()
        if self.protocol is not None:
            return self.protocol
        factory = Factory.forProtocol(lambda: TCPClientProtocol(self))
        if self.reconnect:
            if self._service is None:
                self._service = ClientService(
                    _RecordingEndpoint(self._endpoint(), self), factory,
                    retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=10.0, factor=2.0),
                    clock=self.reactor,
                )  # fmt: skip
                self._service.startService()
            d = self._service.whenConnected(failAfterFailures=1)
        else:
            if self._connecting is None:
                self._connecting = self._endpoint().connect(factory)
                self._connecting.addErrback(self.connectFailed)
                self._connecting.addBoth(self._connectDone)
            d = defer.Deferred()
            self._connectWaiters.append(d)
        for _ in range(3):
            try:
                proto = await d
            except defer.CancelledError:
                raise TCPClosedError(f"client for {self.address} is closed") from None
            except BaseException as e:
                raise connect_error(e, self.address, self.connectTimeout) from None
            if self.protocol is not None:
                return self.protocol
            proto = getattr(proto, "_protocol", proto)  # ClientService's proxy: its protocol
            if self._service is None or not isinstance(proto, TCPClientProtocol):
                break
            # One given up on (aborted) that Twisted has not reported lost yet: the next one.
            await proto.lost
            d = self._service.whenConnected(failAfterFailures=1)
        raise self.closedReason or TCPClosedError(f"connection to {self.address} lost")

    def _connectDone(self, result: Any) -> None:
        """The one connect attempt (``reconnect=False``) ended: tell everyone waiting."""
        self._connecting = None
        waiters, self._connectWaiters = self._connectWaiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def connectFailed(self, failure: Failure) -> Failure:
        """A connect attempt failed (kept as the error to fail fast with while backing off)."""
        self._lastError = connect_error(
            cast(BaseException, failure.value), self.address, self.connectTimeout
        )
        return failure

    async def _open(self) -> TCPClientProtocol:
        if self.protocol is not None and self._fork == _base.GENERATION:
            return self.protocol
        if self._lastError is not None and self._service is not None and not self._closed:
            self._check()
            raise type(self._lastError)(f"{self._lastError} (reconnecting in the background)")
        return await self.connect()

    def connectionOpened(self, proto: TCPClientProtocol) -> None:
        """A connection is up (after every reconnect too); a subclass extending it must call
        ``super().connectionOpened(proto)`` first."""
        self.protocol = proto
        self.closedReason = self._lastError = None
        self.lastRead = self.lastWrite = self.reactor.seconds()
        self._paused = False
        if self.heartbeatIdleTime and self._heartbeat is None:
            self._heartbeat = task.LoopingCall(self._beat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(min(self.heartbeatIdleTime, self.readTimeout or 1.0) / 4,
                                  now=False)  # fmt: skip

    def connectionFailed(self, proto: TCPClientProtocol, reason: TCPClientError) -> None:
        """The connection ends with ``reason``: every waiting caller gets it."""
        if self.protocol is proto:
            self.protocol = None
        self.closedReason = reason
        waiters, self._waiters = self._waiters, deque()
        for entry in waiters:
            if not entry[0].called:
                entry[0].errback(type(reason)(str(reason)))

    def connectionLost(self, proto: TCPClientProtocol, reason: Failure) -> None:
        """Twisted reports the connection gone; waiting callers get :class:`TCPClosedError`."""
        if self.protocol is not proto:
            return
        if self._closed:
            why: TCPClientError = TCPClosedError(f"client for {self.address} is closed")
        elif reason.check(error.ConnectionDone):
            why = TCPClosedError(f"connection closed by {self.address}")
        else:
            why = TCPClosedError(f"connection to {self.address} reset by the peer or lost")
        self.connectionFailed(proto, why)

    # -- sending and receiving -----------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Write ``data`` as it is (framing headers included); connects first if needed."""
        proto = self.protocol
        if proto is None or self._fork != _base.GENERATION:
            proto = await self._open()
        proto.write(data)
        self.lastWrite = self.reactor.seconds()

    def request(self, data: bytes, timeout: float | None = None) -> defer.Deferred[bytes]:
        """Send ``data``; the Deferred fires with the next message, queued behind earlier
        requests.

        ``timeout`` (default ``read_timeout``) past, the connection is closed (a late reply
        must reach nobody) and :class:`TCPTimeoutError` raised.
        """
        proto = self.protocol
        if proto is None or self._callbacks or self._fork != _base.GENERATION:
            return defer.ensureDeferred(self._requestSlow(data, timeout))
        return self._queue(proto, "request", timeout, data)

    async def _requestSlow(self, data: bytes, timeout: float | None) -> bytes:
        if self._callbacks:
            raise TCPBusyError(f"{self.address}: messages go to messageReceived; "
                               "request() needs a client without it")  # fmt: skip
        proto = await self._open()
        return await self._queue(proto, "request", timeout, data)

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message; :class:`TCPTimeoutError` after ``timeout`` (default
        ``read_timeout``) seconds without one (the connection stays open, as in Swoole)."""
        if self._callbacks:
            raise TCPBusyError(f"{self.address}: messages go to messageReceived; "
                               "recv() needs a client without it")  # fmt: skip
        if self._inbox and not self._waiters:
            return self._take()
        if any(entry[1] == "recv" for entry in self._waiters):
            raise TCPBusyError(
                f"recv() is already waiting on {self.address}: one reader per connection; "
                "use request() for request/response, or one client (a pool) per caller"
            )
        proto = await self._open()
        if self._inbox and not self._waiters:
            return self._take()
        return await self._queue(proto, "recv", timeout)

    def _queue(self, proto: TCPClientProtocol, kind: str, timeout: float | None,
               data: bytes | None = None) -> defer.Deferred[bytes]:  # fmt: skip
        """A waiter for the next message: ``[deferred, kind, deadline, seconds]``.

        Deadlines are checked by the sweep (every quarter of ``read_timeout``, at most 1 s);
        a timeout shorter than that gets a timer of its own.
        """
        seconds = self.readTimeout if timeout is None else timeout
        now = self.lastWrite = self.reactor.seconds()
        entry: list[Any] = [None, kind, now + seconds if seconds else _NEVER, seconds]
        if kind == "recv":
            entry[0] = defer.Deferred(lambda _: self._forget(entry))
        else:  # no canceller: a cancelled request keeps its place; its reply is dropped
            entry[0] = defer.Deferred()
        self._waiters.append(entry)
        if data is not None:
            proto.write(data)
        if seconds:
            if seconds < self._sweepInterval:
                self.reactor.callLater(seconds, self._expire, entry)
            elif self._sweeper is None:
                self._sweeper = task.LoopingCall(self._sweep)
                self._sweeper.clock = self.reactor
                self._sweeper.start(self._sweepInterval, now=False)
        return cast(defer.Deferred[bytes], entry[0])

    def _forget(self, entry: list[Any]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        for entry in [e for e in self._waiters if e[2] <= now]:
            self._expire(entry)

    def _expire(self, entry: list[Any]) -> None:
        d, kind, _, seconds = entry
        if entry not in self._waiters or d.called:
            return
        self._waiters.remove(entry)
        message = f"no data from {self.address} within {seconds} s"
        if kind == "recv":
            d.errback(TCPTimeoutError(message))
            return
        if self.protocol is not None:
            self.protocol.abort(TCPClosedError(
                f"connection to {self.address} closed: a request timed out after "
                f"{seconds} s, so no later reply can reach the wrong caller"))  # fmt: skip
        d.errback(TCPTimeoutError(message + "; connection closed"))

    def messageArrived(self, message: bytes) -> None:
        """A message from the connection: to ``messageReceived``, the oldest waiter, or the
        queue."""
        if self.heartbeatPong is not None and message == self.heartbeatPong:
            self._pingSent = 0.0
            return
        if self._callbacks:
            try:
                result = self.messageReceived(message)
            except Exception:
                log.failure("messageReceived from {address} failed", address=self.address)
                return
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                defer.ensureDeferred(result).addErrback(
                    lambda f: log.failure("messageReceived from {address} failed", f,
                                          address=self.address))  # fmt: skip
            return
        if self._waiters:
            d = self._waiters.popleft()[0]
            if not d.called:  # called: a request cancelled while waiting; its reply is dropped
                d.callback(message)
            return
        self._inbox.append(message)
        if len(self._inbox) >= self.maxQueued and self.protocol is not None and not self._paused:
            transport: Any = self.protocol.transport
            transport.pauseProducing()
            self._paused = True

    def _take(self) -> bytes:
        message = self._inbox.popleft()
        if self._paused and len(self._inbox) < self.maxQueued // 2:
            self._paused = False
            if self.protocol is not None:
                transport: Any = self.protocol.transport
                transport.resumeProducing()
        return message

    def _beat(self) -> None:
        proto = self.protocol
        if proto is None or proto.transport is None:
            return
        now = self.reactor.seconds()
        if self._pingSent and self.readTimeout and now - self._pingSent > self.readTimeout:
            self._pingSent = 0.0
            proto.abort(TCPTimeoutError(
                f"no answer to the heartbeat from {self.address} within {self.readTimeout} s; "
                "connection closed"))  # fmt: skip
            return
        if now - max(self.lastRead, self.lastWrite) >= self.heartbeatIdleTime:
            proto.write(self.heartbeatPing)
            self.lastWrite = now
            if self.heartbeatPong is not None and not self._pingSent:
                self._pingSent = now

    async def close(self) -> None:
        """Close the connection and stop reconnecting; later calls raise TCPClosedError."""
        self._closed = True
        for loop in (self._heartbeat, self._sweeper):
            if loop is not None and loop.running:
                loop.stop()
        proto = self.protocol
        if self._service is not None:
            await self._service.stopService()
        elif proto is not None and proto.transport is not None:
            transport: Any = proto.transport
            transport.loseConnection()
            await proto.lost
        closed = TCPClosedError(f"client for {self.address} is closed")
        if proto is not None:
            self.connectionFailed(proto, closed)
        self.closedReason = closed
