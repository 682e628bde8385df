"""Twisted's epoll reactor without the per-event legacy log context.

Twisted's reactors hand every read or write event to the selectable through
``twisted.python.log.callWithLogger``, which asks for the selectable's ``logPrefix()``, copies
the legacy logging context twice and adds five calls, so that ``twisted.python.log.msg``
calls made while handling the event carry the connection's prefix as ``system``.  For a small
HTTP request that bookkeeping costs about as much CPU as parsing and answering it.

:class:`SwooleReactor` is ``EPollReactor`` with that step left out; timers, threads, signals,
connection loss and every transport are Twisted's own.  The one visible difference: legacy
``log.msg`` calls made while a connection handles I/O log ``system`` as ``-``;
``twisted.logger`` events (which this package uses) are the same.  An exception escaping the
event handling is logged, as before, and the loop carries on.

``twistd swoole`` and its worker processes install it unless a reactor was chosen already
(``twistd --reactor=...``).  In another program call :func:`install` before anything imports
``twisted.internet.reactor``; the protocols work the same on any reactor.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from typing import Any, cast

from twisted.internet import epollreactor
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IReactorUNIX,
)
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.logger import Logger
from twisted.python import log as legacy_log


class IServerReactor(
    IReactorCore,
    IReactorTime,
    IReactorFDSet,
    IReactorTCP,
    IReactorUNIX,
    IReactorUDP,
    IReactorSocket,
    IReactorProcess,
    IReactorFromThreads,
):
    """What the server's processes use of their reactor.  A make-believe interface, like
    ``twisted.internet._IReactorCommon``: every reactor Twisted installs on Linux provides
    these parts (the protocols need only ``IReactorTime``)."""


def default_reactor() -> IServerReactor:
    """The installed reactor (installing Twisted's default if none is yet)."""
    from twisted.internet import reactor

    return cast(IServerReactor, reactor)


_log = Logger("tx_swoole.reactor")


class _Reading:
    """The descriptors being read, as the set Twisted's epoll reactor keeps in ``_reads``, but
    without an entry per connection: every registered descriptor is read from, except the
    few that are only written to (``writeOnly``), so the set is the registered descriptors
    less those.  Twisted's own ``_add``/``_remove`` drive it through ``add``/``remove``."""

    __slots__ = ("selectables", "writeOnly")

    def __init__(self, selectables: dict[int, Any], writeOnly: set[int]) -> None:
        self.selectables = selectables
        self.writeOnly = writeOnly

    def __contains__(self, fd: object) -> bool:
        return fd in self.selectables and fd not in self.writeOnly

    def __iter__(self) -> Iterator[int]:
        writeOnly = self.writeOnly
        return iter([fd for fd in self.selectables if fd not in writeOnly])

    def add(self, fd: int) -> None:
        # Called just before the descriptor is registered as a selectable (or while it is one).
        self.writeOnly.discard(fd)

    def remove(self, fd: int) -> None:
        # Called once reading stopped: still registered means still written to.
        if fd in self.selectables:
            self.writeOnly.add(fd)


class SwooleReactor(epollreactor.EPollReactor):
    """``EPollReactor`` dispatching events without ``log.callWithLogger``, and keeping the
    descriptors it reads from without a set entry per connection (:class:`_Reading`)."""

    def __init__(self) -> None:
        super().__init__()
        self._writeOnly: set[int] = set()
        self._reads = _Reading(self._selectables, self._writeOnly)  # type: ignore[assignment]
        # Class constants read for every event by _doReadOrWrite: as instance attributes the
        # interpreter's attribute caches serve them.
        self._POLL_DISCONNECTED = self._POLL_DISCONNECTED
        self._POLL_IN = self._POLL_IN
        self._POLL_OUT = self._POLL_OUT

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        only_in = self._POLL_IN
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == only_in:
                # A plain read: exactly _doReadOrWrite's read path, without its frame.
                try:
                    why = _NO_FILEDESC if selectable.fileno() == -1 else selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    legacy_log.err()
                if not why:
                    continue
            try:
                if event == only_in:
                    self._disconnectSelectable(selectable, why, True)
                else:
                    dispatch(selectable, fd, event)  # catches and logs the selectable's errors
            except Exception:
                _log.failure("error handling an event on {selectable!r}", selectable=selectable)

    doIteration = doPoll

    def addWriter(self, writer: Any) -> None:
        fd = writer.fileno()
        if fd in self._writes:  # every buffered write asks again; Twisted's _add then does
            return  # nothing either
        reading = fd in self._reads
        super().addWriter(writer)
        if not reading and fd in self._writes:
            self._writeOnly.add(fd)

    def removeWriter(self, writer: Any) -> None:
        super().removeWriter(writer)
        if self._writeOnly:
            self._writeOnly.intersection_update(self._writes)


def install() -> SwooleReactor:
    """Install :class:`SwooleReactor` as ``twisted.internet.reactor`` and return it."""
    from twisted.internet.main import installReactor

    reactor = SwooleReactor()
    installReactor(reactor)
    return reactor


def install_unless_chosen() -> IServerReactor:
    """Install :class:`SwooleReactor` if no reactor is installed yet; return the reactor."""
    if "twisted.internet.reactor" not in sys.modules:
        return cast(IServerReactor, install())
    return default_reactor()
