"""PROXY protocol on a listener: read the header, then hand the connection to the app.

``ProxyHeaderFactory(factory, timeout)`` wraps a listener's factory.  Each accepted connection
first gets a :class:`ProxyHeaderReader`; once the header (v1 or v2, see
:mod:`tx_swoole.protocols._proxy`) has arrived, the app's protocol is built for the client
address it names and takes the transport over (the same transport object, so write-through,
producers and half-close are unchanged), with the bytes after the header.  The transport's
``getPeer()`` then answers the client's address; a ``LOCAL``/``UNKNOWN`` header (a proxy's
health check) keeps the socket's own.

Resource handling: at most one header's bytes are held per connection (v2's 16 + 65,535), for
at most ``timeout`` seconds.  Error handling: a bad or missing header is logged at WARNING with
the peer and the reason and the connection closed; the application never sees it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import address
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import ProxyProtocolError
from tx_swoole.protocols._proxy import parse_header

__all__ = ["ProxyHeaderFactory", "ProxyHeaderReader"]
log = SwooleLogger("tx_swoole.proxy")
MAX_HEADER = 16 + 65535


class ProxyHeaderFactory(ServerFactory):
    """Wraps ``factory``: each connection reads its PROXY header before ``factory`` builds the
    app's protocol (which may refuse it by returning None, as at accept)."""

    def __init__(self, factory: ServerFactory, timeout: float, clock: IReactorTime) -> None:
        self.wrapped = factory
        self.timeout = timeout
        self.clock = clock

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        return str(self.wrapped.logPrefix())

    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderReader:
        return ProxyHeaderReader(self)


class ProxyHeaderReader(Protocol):
    """The protocol of a connection until its PROXY header has been read."""

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        self.headerFactory = factory
        self.buffer = b""
        self.timer: Any = None

    def connectionMade(self) -> None:
        f = self.headerFactory
        if f.timeout:
            self.timer = f.clock.callLater(f.timeout, self._timedOut)

    def _timedOut(self) -> None:
        self.timer = None
        timeout = self.headerFactory.timeout
        self._refuse(f"no PROXY header within proxy_protocol_timeout={timeout}s "
                     f"({len(self.buffer)} bytes received)")  # fmt: skip

    def _refuse(self, reason: str) -> None:
        transport: Any = self.transport
        log.warn("connection from {peer} closed: {reason}", peer=transport.getPeer(),
                 reason=reason)  # fmt: skip
        transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        try:
            header = parse_header(self.buffer)
        except ProxyProtocolError as e:
            self._stopTimer()
            self._refuse(str(e))
            return
        if header is None:
            if len(self.buffer) > MAX_HEADER:
                self._stopTimer()
                self._refuse(f"PROXY header longer than {MAX_HEADER} bytes")
            return
        self._stopTimer()
        transport: Any = self.transport
        peer = transport.getPeer()
        if header.source is not None:
            host, port = header.source
            kind = address.IPv6Address if ":" in host else address.IPv4Address
            peer = kind("TCP", host, port)
            transport.getPeer = lambda: peer
        proto = self.headerFactory.wrapped.buildProtocol(peer)
        if proto is None:  # refused (max_conn, draining): as at accept
            transport.loseConnection()
            return
        rest, self.buffer = self.buffer[header.length :], b""
        transport.protocol = proto
        proto.makeConnection(transport)
        if rest and not transport.disconnecting:
            proto.dataReceived(rest)

    def _stopTimer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def connectionLost(self, reason: Any = None) -> None:
        self._stopTimer()
