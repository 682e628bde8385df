"""One Redis connection: the FIFO of pending replies and the pipeline collector.

Writes go out at once; replies are matched to callers strictly in order.  A cancelled command
keeps its place in the FIFO and its reply is dropped when it arrives; a command that times out
aborts the connection (see :mod:`tx_swoole.clients.redis`).  The pool
(:mod:`tx_swoole.clients._pool`) owns connections; this module knows nothing of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from tx_swoole.clients._base import fast_write
from tx_swoole.clients._commands import IRedisCommands, RedisCommands, ScanCommands, Transform
from tx_swoole.clients._resp import RespReader, pack_command
from tx_swoole.errors import (
    RedisConnectionError,
    RedisError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    WatchError,
)

__all__ = ["Collector", "IRedisConnector", "RedisConnection"]


class IRedisConnector(Interface):
    """What a pipeline and a subscriber need of a pool: where the server is, how to reach
    it, and a shared connection.  :class:`~tx_swoole.clients.redis.RedisPool` provides it."""

    address = Attribute("host:port or the Unix socket path, as error messages name it")
    encoding = Attribute("the codec replies are decoded with, or None for bytes")
    reactor = Attribute("the IReactorTime the connections are timed with")
    connectTimeout = Attribute("seconds a connect may take (0: Twisted's default)")

    def endpoint() -> Any:
        """A fresh ``IStreamClientEndpoint`` to the server."""

    def auth_command() -> tuple[Any, ...] | None:
        """The AUTH command a new connection sends first, or None."""

    def shared_connection() -> Any:
        """An awaitable of a :class:`RedisConnection` in shared use."""


class Collector:
    """Gathers the replies of one pipeline, errors in place; fires once, with the list."""

    __slots__ = ("results", "remaining", "deferred", "address")
    called = False  # read by dataReceived, like Deferred.called; a collector drops its own replies

    def __init__(self, count: int, address: str) -> None:
        self.results: list[Any] = []
        self.remaining = count
        self.address = address
        self.deferred: defer.Deferred[Any] = defer.Deferred(self._cancel)

    def _cancel(self, d: defer.Deferred[Any]) -> None:
        self.remaining = -1  # replies still arrive in order and are dropped

    def add(self, reply: Any, transform: Transform) -> None:
        if self.remaining < 0:
            return
        if reply.__class__ is RedisReplyError:
            reply = RedisReplyError(f"{reply} ({self.address})")
        elif transform is not None:
            try:
                reply = transform(reply)
            except Exception as e:
                reply = e
        self.results.append(reply)
        self.remaining -= 1
        if self.remaining == 0:
            self.deferred.callback(self.results)

    def fail(self, reason: RedisError) -> None:
        if self.remaining > 0:
            self.remaining = -1
            self.deferred.errback(reason)


@implementer(IRedisCommands)
class RedisConnection(Protocol, RedisCommands, ScanCommands):
    """One Redis connection: writes go out at once, replies are matched in FIFO order.

    Resource handling: pending entries are ``[deferred, deadline, transform]``; a cancelled
    entry keeps its place (its reply is dropped).  Error handling: see the module docstring.
    """

    def __init__(
        self, address: str, encoding: str | None, clock: IReactorTime, timeout: float
    ) -> None:
        self.address = address
        self.clock = clock
        self.timeout = timeout
        self.pending: deque[list[Any]] = deque()
        self.reader = RespReader(encoding)
        self.lastUsed = clock.seconds()
        self.exclusive = False
        self.dirty = False  # MULTI or WATCH left open: never hand back to shared use
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.closedReason: RedisError | None = None
        self._head: list[Any] | None = None
        self._headSince = 0.0
        self._write: Callable[[bytes], None] = lambda data: self.transport.write(data)  # type: ignore[union-attr]

    def connectionMade(self) -> None:
        self._write = fast_write(self.transport)

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        return self.send(pack_command(args), transform)

    def send(self, data: bytes, transform: Transform = None, deadline: float | None = None,
             count: int = 1) -> defer.Deferred[Any]:  # fmt: skip
        """Write ``data`` (``count`` commands); the Deferred fires with the last reply.

        ``deadline`` (reactor seconds) replaces ``command_timeout`` for this command.
        """
        if self.closedReason is not None or self.transport is None:
            return defer.fail(self.closedReason or RedisConnectionError(f"{self.address}: closed"))
        # No canceller: a cancelled Deferred is "called", its slot stays in the FIFO and its
        # reply is dropped when it arrives (see dataReceived).
        d: defer.Deferred[Any] = defer.Deferred()
        pending = self.pending
        if count > 1:
            for _ in range(count - 1):
                pending.append([None, deadline, None])
        pending.append([d, deadline, transform])
        self._write(data)
        return d

    def send_many(self, commands: list[tuple[tuple[Any, ...], Transform]]) -> defer.Deferred[Any]:
        """Write several commands at once (a pipeline) → Deferred of the list of replies,
        errors in place."""
        if self.closedReason is not None or self.transport is None:
            return defer.fail(self.closedReason or RedisConnectionError(f"{self.address}: closed"))
        collector = Collector(len(commands), self.address)
        append = self.pending.append
        for _args, transform in commands:
            append([collector, None, transform])
        self._write(b"".join([pack_command(args) for args, _ in commands]))
        return collector.deferred

    def parse(self, data: bytes) -> list[Any]:
        """The replies completed by ``data``; garbage aborts the connection (→ [])."""
        try:
            return self.reader.feed(data)
        except RedisProtocolError as e:
            self.abort(RedisProtocolError(f"{self.address}: {e}"))
            return []

    def dataReceived(self, data: bytes) -> None:
        replies = self.parse(data)
        pending = self.pending
        self.lastUsed = self.clock.seconds()  # (before the callbacks: see Pool._healthCheck)
        for reply in replies:
            if not pending:
                self.abort(RedisProtocolError(f"{self.address}: reply with no command pending"))
                return
            target, _, transform = pending.popleft()
            if target is None or target.called:  # called: cancelled while pending
                continue
            if target.__class__ is Collector:
                target.add(reply, transform)
            elif reply.__class__ is RedisReplyError:
                target.errback(RedisReplyError(f"{reply} ({self.address})"))
            elif transform is None:
                target.callback(reply)
            else:
                try:
                    target.callback(transform(reply))
                except Exception:
                    target.errback(Failure())

    def checkTimeout(self, now: float) -> None:
        """Called by the pool's sweep: abort if the oldest pending command is overdue.

        Commands without their own deadline are timed from when a sweep first sees them at
        the head of the FIFO, so a timeout fires between ``command_timeout`` and
        ``command_timeout`` plus one sweep interval (a quarter of it, at most 1 s).
        """
        if not self.pending:
            self._head = None
            return
        head = self.pending[0]
        if head[1] is not None:
            overdue = head[1] < now
        elif head is not self._head:
            self._head, self._headSince = head, now
            return
        else:
            overdue = bool(self.timeout) and now - self._headSince >= self.timeout
        if overdue:
            self.abort(RedisTimeoutError(f"{self.address}: command timed out after "
                                         f"{self.timeout}s"), first_only=True)  # fmt: skip

    def abort(self, reason: RedisError, first_only: bool = False) -> None:
        """Close at once and fail what is pending (``reason`` for the first or for all)."""
        if self.closedReason is not None:
            return
        others = reason
        if first_only:
            others = RedisConnectionError(
                f"{self.address}: connection aborted because an earlier command timed out"
            )
        self._failPending(reason, others)
        self.closedReason = others
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _failPending(self, first: RedisError, others: RedisError) -> None:
        pending, self.pending = self.pending, deque()
        for i, (target, _, _) in enumerate(pending):
            if target is None or target.called:
                continue
            if target.__class__ is Collector:
                target.fail(first if i == 0 else others)
            else:
                target.errback(first if i == 0 else others)

    def connectionLost(self, reason: Failure = Failure(error.ConnectionDone())) -> None:  # noqa: B008
        if self.closedReason is None:
            self.closedReason = RedisConnectionError(
                f"{self.address}: connection lost ({reason.getErrorMessage()})"
            )
        lost = self.closedReason
        self._failPending(lost, lost)
        if not self.lost.called:
            self.lost.callback(None)

    async def multi_exec(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """MULTI, the commands, EXEC in one write; EXEC's replies with errors in place.

        Raises :class:`~tx_swoole.errors.WatchError` when a WATCHed key changed.
        """
        commands = list(commands)
        data = pack_command(("MULTI",)) + b"".join(pack_command(c) for c in commands)
        data += pack_command(("EXEC",))
        self.dirty = True
        try:
            result = await self.send(data, count=len(commands) + 2)
        except RedisReplyError as e:
            self.dirty = False
            raise e
        self.dirty = False
        if result is None:
            raise WatchError(f"{self.address}: a watched key changed; the transaction did not run")
        return [RedisReplyError(f"{r} ({self.address})") if isinstance(r, RedisReplyError) else r
                for r in result]  # fmt: skip

    def watch(self, *keys: Any) -> defer.Deferred[Any]:
        """WATCH keys (the connection is then not returned to shared use until EXEC/UNWATCH)."""
        self.dirty = True
        return self._call(("WATCH", *keys))

    def unwatch(self) -> defer.Deferred[Any]:
        d = self._call(("UNWATCH",))

        def clean(reply: Any) -> Any:
            self.dirty = False
            return reply

        return d.addCallback(clean)
