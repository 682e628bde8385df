"""Async Redis client for any Twisted program: connections, a pool, pipelines, transactions.

``RedisPool(host, port, size=..., ...)`` connects lazily on first use.  Commands return
Deferreds (``await`` them in ``async def``).  Concurrent callers share the pool's connections
with implicit pipelining: each connection keeps a FIFO of pending replies and its writes go out
at once.  ``pool.pipeline()`` batches explicitly; ``pool.transaction()`` runs WATCH/MULTI/EXEC
with retries; ``pool.client()`` checks a connection out exclusively (blocking commands,
transactions) and always gives it back; ``pool.pubsub()`` subscribes on a dedicated connection
that resubscribes by itself after a reconnect.

**A reply never reaches the wrong caller.**  Replies are matched to callers strictly in order
(FIFO).  A cancelled command keeps its place in the FIFO and its reply is dropped when it
arrives.  A command that times out aborts its connection: it fails with
:class:`~tx_swoole.errors.RedisTimeoutError` and every other command pending on that
connection with :class:`~tx_swoole.errors.RedisConnectionError` — nothing sent on that
connection can be answered any more, so no reply can shift onto another caller.

Resource handling: at most ``size`` connections (plus one per ``pubsub()``); each holds at
most one partial reply in memory (bounded); ``await pool.close()`` closes everything.  A pool
belongs to the process that created it: used after ``os.fork`` it fails with
:class:`~tx_swoole.errors.RedisWrongProcessError` (create clients in ``worker_start``).

Error handling: refused, closed and lost connections are ``RedisConnectionError``, slow ones
``RedisTimeoutError``, server ``-ERR`` replies ``RedisReplyError`` (the connection stays
usable), garbage ``RedisProtocolError``; each message names host:port.  Deferred-returning
methods never raise synchronously.  After connection failures, new connection attempts back
off with jitter (Twisted's ``backoffPolicy``); while backing off, commands fail at once
instead of hanging.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, task, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tx_swoole._log import SwooleLogger

if TYPE_CHECKING:
    from tx_swoole.clients._pubsub import PubSub
from tx_swoole.clients._commands import IRedisCommands, RedisCommands, ScanCommands, Transform
from tx_swoole.clients._pipeline import Pipeline, Script, _Collector
from tx_swoole.clients._resp import RespReader, pack_command
from tx_swoole.errors import (
    RedisAcquireTimeoutError,
    RedisConnectionError,
    RedisError,
    RedisPoolClosedError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    RedisWrongProcessError,
    WatchError,
)
from tx_swoole.transport import own_hot_attributes, write_through

log = SwooleLogger("tx_swoole.redis")
_FORK_GENERATION = 0


def _forked() -> None:
    global _FORK_GENERATION
    _FORK_GENERATION += 1


os.register_at_fork(after_in_child=_forked)
_NEVER = float("inf")


@implementer(IRedisCommands)
class RedisConnection(Protocol, RedisCommands, ScanCommands):
    """One Redis connection: writes go out at once, replies are matched in FIFO order.

    Resource handling: pending entries are ``[deferred, deadline, transform]``; a cancelled
    entry keeps its place (its reply is dropped).  Error handling: see the module docstring.
    """

    def __init__(self, address: str, encoding: str | None, clock: Any, timeout: float) -> None:
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
        # TCP: send at once when nothing is buffered (write-through); others: Twisted's write.
        transport: Any = self.transport
        if isinstance(transport, tcp.Connection) and not transport.TLS:
            own_hot_attributes(transport)
            self._write = partial(write_through, transport)
        else:
            self._write = transport.write

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
        collector = _Collector(len(commands), self.address)
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
        for reply in replies:
            if not pending:
                self.abort(RedisProtocolError(f"{self.address}: reply with no command pending"))
                return
            target, _, transform = pending.popleft()
            if target is None or target.called:  # called: cancelled while pending
                continue
            if target.__class__ is _Collector:
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
        self.lastUsed = self.clock.seconds()

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
            if target.__class__ is _Collector:
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


def _connect_error(e: BaseException, address: str, timeout: float) -> RedisError:
    if isinstance(e, RedisError):
        return e
    if isinstance(e, error.TimeoutError | defer.CancelledError | TimeoutError):
        return RedisTimeoutError(f"connect to {address} timed out after {timeout}s")
    if isinstance(e, error.ConnectionRefusedError | ConnectionRefusedError):
        return RedisConnectionError(f"connection refused by {address}")
    return RedisConnectionError(f"cannot connect to {address}: {e}")


@implementer(IRedisCommands)
class RedisPool(RedisCommands, ScanCommands):
    """A lazily connected pool of Redis connections with implicit pipelining.

    ``unix_socket`` connects to a Unix socket path instead of host:port; ``tls`` is an
    ``IOpenSSLClientConnectionCreator`` (``twisted.internet.ssl.optionsForClientTLS(host)``)
    for TLS.  ``encoding`` decodes replies to str.  Timeouts are seconds (0: none).
    ``health_check_interval``: idle connections are PINGed this often; ``idle_timeout``:
    connections idle longer are closed (0: never).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        size: int = 10,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        unix_socket: str | None = None,
        tls: Any = None,
        encoding: str | None = None,
        health_check_interval: float = 30.0,
        idle_timeout: float = 0.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if size < 1:
            raise ValueError(f"size={size}: a pool needs at least one connection")
        self.reactor = reactor
        self.address = unix_socket or f"{host}:{port}"
        self.host, self.port, self.unixSocket, self.tls = host, port, unix_socket, tls
        self.size, self.db, self.username, self.password = size, db, username, password
        self.connectTimeout = connect_timeout
        self.commandTimeout = command_timeout
        self.acquireTimeout = acquire_timeout
        self.encoding = encoding
        self.healthCheckInterval = health_check_interval
        self.idleTimeout = idle_timeout
        self.shared: list[RedisConnection] = []
        self.connections: set[RedisConnection] = set()
        self._next = 0
        self._connecting = 0
        self._waiters: deque[defer.Deferred[None]] = deque()
        self._failures = 0  # outages in a row (connects failing together count once)
        self._outage = 0  # bumped when a failure is counted: attempts begun before it share it
        self._retryAt = 0.0
        self._lastError: RedisError | None = None
        self._backoff = backoffPolicy(initialDelay=0.1, maxDelay=10.0, factor=2.0)
        self._closed = False
        self._fork = _FORK_GENERATION
        self._pid = os.getpid()
        self._sweeper: task.LoopingCall | None = None

    def __reduce__(self) -> Any:
        raise RedisWrongProcessError(
            "a RedisPool cannot be sent to another process: create it in worker_start"
        )

    # -- command path --------------------------------------------------------------------------
    def _check(self) -> RedisError | None:
        if self._closed:
            return RedisPoolClosedError(f"pool for {self.address} is closed")
        if self._fork != _FORK_GENERATION:
            return RedisWrongProcessError(
                f"this pool for {self.address} was created in process {self._pid} and used in "
                f"{os.getpid()}: connections cannot be shared across processes; create clients "
                "in each worker's worker_start hook"
            )
        return None

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        shared = self.shared
        n = len(shared)
        # Fast path (what _check tests, inlined): round-robin over the shared connections,
        # unless the pool may still grow and the next connection is busy.
        if n and self._fork == _FORK_GENERATION and not self._closed:
            conn = shared[self._next % n]
            if n >= self.size or not conn.pending:
                self._next += 1
                return conn._call(args, transform)
        return defer.ensureDeferred(self._callSlow(args, transform))

    async def _callSlow(self, args: tuple[Any, ...], transform: Transform) -> Any:
        problem = self._check()
        if problem is not None:
            raise problem
        conn = await self._sharedConnection()
        return await conn._call(args, transform)

    async def _sharedConnection(self) -> RedisConnection:
        if len(self.connections) + self._connecting < self.size:
            if self.shared:
                self._grow()  # in the background; use what is there now
            else:
                return await self._newConnection(shared=True)
        if self.shared:
            self._next += 1
            return self.shared[self._next % len(self.shared)]
        await self._waitForRelease()
        return await self._sharedConnection()

    def _grow(self) -> None:
        d = defer.ensureDeferred(self._newConnection(shared=True))
        d.addErrback(lambda f: None)  # the error is kept in _lastError for the next caller

    async def _newConnection(self, shared: bool) -> RedisConnection:
        now = self.reactor.seconds()
        if now < self._retryAt and self._lastError is not None:
            raise type(self._lastError)(f"{self._lastError} (retrying in "
                                        f"{self._retryAt - now:.1f}s)")  # fmt: skip
        self._connecting += 1
        outage = self._outage
        try:
            conn = await self._connect()
        except BaseException as e:
            self._connecting -= 1
            self._lastError = error = _connect_error(e, self.address, self.connectTimeout)
            if outage == self._outage:  # the first failure of this outage: one back-off step
                self._outage += 1
                self._failures += 1
                self._retryAt = self.reactor.seconds() + self._backoff(self._failures)
            if not self.connections and not self._connecting:
                self._failWaiters(error)  # nothing left that could serve them
            raise error from None
        self._connecting -= 1
        self._failures = 0
        self._lastError = None
        self.connections.add(conn)
        if shared:
            self.shared.append(conn)
            for _ in range(len(self._waiters)):  # callers waiting for any connection
                self._wakeOne()
        conn.lost.addCallback(lambda _: self._forget(conn))
        self._startSweeper()
        return conn

    def endpoint(self) -> Any:
        """The client endpoint for this pool's address (TCP, TLS or Unix socket)."""
        timeout = self.connectTimeout or 30.0
        if self.unixSocket:
            return UNIXClientEndpoint(self.reactor, self.unixSocket, timeout=timeout)
        endpoint: Any = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=timeout)
        return wrapClientTLS(self.tls, endpoint) if self.tls is not None else endpoint

    def auth_command(self) -> tuple[Any, ...] | None:
        """The AUTH command for new connections, or None without a password."""
        if self.password is None:
            return None
        if self.username is None:
            return ("AUTH", self.password)
        return ("AUTH", self.username, self.password)

    async def _connect(self) -> RedisConnection:
        factory = Factory.forProtocol(
            lambda: RedisConnection(self.address, self.encoding, self.reactor, self.commandTimeout)
        )
        conn: RedisConnection = await self.endpoint().connect(factory)
        handshake = []
        auth = self.auth_command()
        if auth is not None:
            handshake.append(conn._call(auth))
        if self.db:
            handshake.append(conn._call(("SELECT", self.db)))
        try:
            for d in handshake:
                await d
        except BaseException:
            conn.abort(RedisConnectionError(f"{self.address}: handshake failed"))
            raise
        return conn

    def _forget(self, conn: RedisConnection) -> None:
        self.connections.discard(conn)
        if conn in self.shared:
            self.shared.remove(conn)
        self._wakeOne()

    # -- exclusive use ---------------------------------------------------------------------------
    @asynccontextmanager
    async def client(self) -> AsyncIterator[RedisConnection]:
        """Check a connection out exclusively; it is always given back (or closed if it was
        left in MULTI/WATCH or with replies pending)."""
        problem = self._check()
        if problem is not None:
            raise problem
        conn = await self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    async def _acquire(self) -> RedisConnection:
        deadline = self.reactor.seconds() + (self.acquireTimeout or _NEVER)
        while True:
            if len(self.connections) + self._connecting < self.size:
                conn = await self._newConnection(shared=False)
                conn.exclusive = True
                return conn
            if self.shared:
                conn = min(self.shared, key=lambda c: len(c.pending))
                self.shared.remove(conn)
                conn.exclusive = True
                return conn
            await self._waitForRelease(deadline)

    async def _waitForRelease(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = self.reactor.seconds() + (self.acquireTimeout or _NEVER)
        remaining = deadline - self.reactor.seconds()
        if remaining <= 0:
            raise RedisAcquireTimeoutError(
                f"no connection to {self.address} free within acquire_timeout="
                f"{self.acquireTimeout}s (size={self.size}); raise size or acquire_timeout"
            )
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        if remaining != _NEVER:
            d.addTimeout(remaining, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            raise RedisAcquireTimeoutError(
                f"no connection to {self.address} free within acquire_timeout="
                f"{self.acquireTimeout}s (size={self.size}); raise size or acquire_timeout"
            ) from None
        finally:
            if d in self._waiters:
                self._waiters.remove(d)

    def _release(self, conn: RedisConnection) -> None:
        conn.exclusive = False
        if conn.closedReason is not None:
            return
        if conn.dirty or conn.pending or self._closed:
            conn.abort(RedisConnectionError(f"{self.address}: closed after exclusive use"))
            return
        self.shared.append(conn)
        self._wakeOne()

    def _failWaiters(self, error: RedisError) -> None:
        """Callers queued for a connection get the connection error now, not at their
        acquire_timeout (or never, with acquire_timeout=0)."""
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            if not d.called:
                d.errback(type(error)(str(error)))

    def _wakeOne(self) -> None:
        while self._waiters:
            d = self._waiters.popleft()
            if not d.called:
                d.callback(None)
                return

    # -- pipelines, transactions, blocking commands, pub/sub ------------------------------------
    def pipeline(self) -> Pipeline:
        """A batch of commands sent in one write: ``await p.execute()`` → list (errors in
        place)."""
        return Pipeline(self)

    async def transaction(
        self,
        func: Callable[[RedisConnection], Awaitable[Iterable[tuple[Any, ...]]]],
        *watch: Any,
        retries: int = 10,
    ) -> list[Any]:
        """WATCH ``watch``, let ``func(conn)`` read and return the commands, MULTI/EXEC them;
        retry on :class:`~tx_swoole.errors.WatchError` up to ``retries`` times."""
        for _ in range(retries + 1):
            async with self.client() as conn:
                if watch:
                    await conn.watch(*watch)
                commands = await func(conn)
                try:
                    return await conn.multi_exec(commands)
                except WatchError:
                    continue
        raise WatchError(f"{self.address}: watched keys kept changing ({retries} retries)")

    async def _blocking(
        self, args: tuple[Any, ...], block: float, transform: Transform = None
    ) -> Any:
        async with self.client() as conn:
            deadline = self.reactor.seconds() + (block or _NEVER) + (self.commandTimeout or _NEVER)
            d = conn.send(pack_command(args), transform, deadline=deadline)
            return await d

    def blpop(self, keys: Iterable[Any], timeout: float = 0) -> defer.Deferred[Any]:
        """BLPOP on an exclusive connection; None when ``timeout`` seconds pass."""
        args = ("BLPOP", *keys, timeout)
        return defer.ensureDeferred(self._blocking(args, timeout))

    def brpop(self, keys: Iterable[Any], timeout: float = 0) -> defer.Deferred[Any]:
        args = ("BRPOP", *keys, timeout)
        return defer.ensureDeferred(self._blocking(args, timeout))

    def xread(self, streams: dict[Any, Any], count: int | None = None,
              block: int | None = None) -> defer.Deferred[Any]:  # fmt: skip
        """XREAD [COUNT n] [BLOCK ms] STREAMS ...; blocking reads use an exclusive connection."""
        from tx_swoole.clients._commands import stream_read_reply

        args: list[Any] = ["XREAD"]
        if count is not None:
            args += ["COUNT", count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams.keys(), *streams.values()]
        if block is None:
            return self._call(tuple(args), stream_read_reply)
        return defer.ensureDeferred(
            self._blocking(tuple(args), block / 1000 if block else 0, stream_read_reply)
        )

    def register_script(self, source: str) -> Script:
        """A Lua script called with EVALSHA, falling back to EVAL when not cached."""
        return Script(self, source)

    def pubsub(self) -> PubSub:
        """A subscriber on its own connection (see :class:`PubSub`)."""
        from tx_swoole.clients._pubsub import PubSub

        return PubSub(self)

    # -- housekeeping ------------------------------------------------------------------------------
    def _startSweeper(self) -> None:
        if self._sweeper is None:
            interval = min(x for x in (self.commandTimeout / 4, 1.0) if x > 0)
            self._sweeper = task.LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(interval, now=False)

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        for conn in list(self.connections):
            conn.checkTimeout(now)
            idle = now - conn.lastUsed
            if conn.pending or conn.exclusive or conn.closedReason is not None:
                continue
            if self.idleTimeout and idle > self.idleTimeout:
                conn.abort(RedisConnectionError(f"{self.address}: idle connection closed"))
            elif self.healthCheckInterval and idle > self.healthCheckInterval:
                conn._call(("PING",)).addErrback(lambda f: None)

    async def close(self) -> None:
        """Close every connection; later commands fail with RedisPoolClosedError."""
        self._closed = True
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        lost = [c.lost for c in self.connections]
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.closedReason = RedisPoolClosedError(f"pool for {self.address} is closed")
                conn.transport.loseConnection()
        for d in list(self._waiters):
            if not d.called:
                d.errback(RedisPoolClosedError(f"pool for {self.address} is closed"))
        await defer.DeferredList(lost)
