"""UDP (Swoole's ``SWOOLE_SOCK_UDP`` and ``onPacket``): datagrams in, datagrams out.

Subclass :class:`UDPProtocol` and override ``datagramReceived(data, address)`` (it may be
``async def`` or return a Deferred); answer with ``self.sendto(data, address)``.  A worker
holds one instance per UDP listener; ``self.server`` is the worker's service (``task``,
``sendMessage``, ``stats``, ``workerId``), ``self.settings`` the listener's settings.

:class:`DatagramServer` is what the socket talks to: it counts datagrams, drops those over
``package_max_length`` (with a WARNING naming the setting, at most once a second), keeps a
failing handler from reaching the reactor, and knows which async handlers are still running,
so a draining worker stops reading, lets them finish (they may still answer) and only then
closes its socket.  With a master, every worker reads its own SO_REUSEPORT socket of the port
(the kernel spreads datagrams over them by source address), and the socket outlives the
worker: what arrives during a reload waits in it for the replacement.

Resource handling: a datagram is read into at most ``package_max_length + 1`` bytes; nothing
is buffered beyond what the handlers hold.  Error handling: a handler's exception is logged
with its traceback and the worker carries on; a send that fails (an unreachable address, a
datagram too large, a full socket buffer) is logged at NOTICE and returns False.
"""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.settings import Settings

log = SwooleLogger("tx_swoole.udp")
MAX_DATAGRAM = 65535  # what one recvfrom can return at most (IPv4 and IPv6 alike)
__all__ = ["DatagramServer", "UDPProtocol"]


class UDPProtocol:
    """A UDP listener's handler; subclass it and override :meth:`datagramReceived`."""

    server: Any = None  # the worker's service
    settings: Settings
    transport: Any = None  # the UDP port

    def datagramReceived(self, data: bytes, address: tuple[str, int]) -> Any:
        """Override: ``data`` arrived from ``address`` (host, port)."""

    def startProtocol(self) -> None:
        """Override: the socket is open (``self.transport`` is set)."""

    def stopProtocol(self) -> None:
        """Override: the socket is closing (the worker drains or stops)."""

    def sendto(self, data: bytes, address: tuple[str, int]) -> bool:
        """Send ``data`` as one datagram to ``address``; False (logged at NOTICE) if it
        cannot go: no socket any more, an address that is not an IP address, a datagram too
        large, or a full socket buffer."""
        if self.transport is None:
            log.notice("sendto {address} dropped: the UDP socket is closed", address=address)
            return False
        try:
            self.transport.write(data, address)
        except MessageLengthError:
            log.notice("sendto {address} dropped: {size} bytes do not fit one datagram",
                       address=address, size=len(data))  # fmt: skip
            return False
        except (OSError, ValueError) as e:
            log.notice("sendto {address} dropped: {error}", address=address, error=e)
            return False
        return True


class DatagramServer(DatagramProtocol):
    """The socket's protocol for one :class:`UDPProtocol`: limits, counts, drain."""

    noisy = False

    def __init__(self, handler: UDPProtocol, settings: Settings, clock: Any) -> None:
        self.handler = handler
        handler.settings = settings
        self.settings = settings
        self.limit = settings.package_max_length
        self.seconds = clock.seconds
        self.requestCount = 0  # datagrams handed to the handler
        self.maxRequestReached: Any = None  # called after each one when set (max_request)
        self.running: set[Deferred[Any]] = set()  # async handlers not finished
        self._dropped = 0
        self._droppedLogged = -1.0
        self._idle: list[Deferred[None]] = []

    @property
    def readSize(self) -> int:  # noqa: N802
        """The read size for the socket: one byte past the limit shows a datagram over it."""
        return min(self.limit + 1, MAX_DATAGRAM)

    def startProtocol(self) -> None:
        self.handler.transport = self.transport
        self.handler.startProtocol()

    def stopProtocol(self) -> None:
        try:
            self.handler.stopProtocol()
        finally:
            self.handler.transport = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) > self.limit:
            self._drop(addr)
            return
        self.requestCount += 1
        if self.maxRequestReached is not None:
            self.maxRequestReached()
        try:
            result = self.handler.datagramReceived(data, addr)
        except Exception:
            log.failure("datagramReceived from {addr} failed", addr=addr)
            return
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            self.running.add(result)
            result.addBoth(self._finished, result, addr)

    def _finished(self, result: Any, d: Deferred[Any], addr: Any) -> None:
        self.running.discard(d)
        if isinstance(result, Failure):
            log.failure("datagramReceived from {addr} failed", result, addr=addr)
        if not self.running and self._idle:
            waiters, self._idle = self._idle, []
            for w in waiters:
                w.callback(None)

    def _drop(self, addr: Any) -> None:
        self._dropped += 1
        now = self.seconds()
        if now - self._droppedLogged >= 1.0:
            log.warn(
                "datagram from {addr} dropped: over package_max_length={limit} bytes ({count} "
                "dropped since the last warning); raise package_max_length for larger "
                "datagrams", addr=addr, limit=self.limit, count=self._dropped,
            )  # fmt: skip
            self._dropped = 0
            self._droppedLogged = now

    def whenIdle(self) -> Deferred[None]:
        """Fires once no async handler is running."""
        if not self.running:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d
