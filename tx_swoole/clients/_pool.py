"""The Redis pool: connections made lazily, shared round-robin or checked out, back-off.

See :mod:`tx_swoole.clients.redis` (the public face) for what it promises.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from tx_swoole.clients import _base
from tx_swoole.clients._base import connect_failure
from tx_swoole.clients._commands import (
    IRedisCommands,
    RedisCommands,
    ScanCommands,
    Transform,
    stream_read_reply,
)
from tx_swoole.clients._connection import IRedisConnector, RedisConnection
from tx_swoole.clients._pipeline import Pipeline, Script
from tx_swoole.clients._pubsub import PubSub
from tx_swoole.clients._resp import pack_command
from tx_swoole.errors import (
    RedisAcquireTimeoutError,
    RedisConnectionError,
    RedisError,
    RedisPoolClosedError,
    RedisTimeoutError,
    RedisWrongProcessError,
    WatchError,
)

__all__ = ["RedisPool"]
_NEVER = float("inf")


def _connect_error(e: BaseException, address: str, timeout: float) -> RedisError:
    if isinstance(e, RedisError):
        return e
    timed_out, message = connect_failure(e, address, timeout)
    return (RedisTimeoutError if timed_out else RedisConnectionError)(message)


@implementer(IRedisCommands, IRedisConnector)
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
        reactor: IReactorTime | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = cast(IReactorTime, default)
        if size < 1:
            raise ValueError(f"size={size}: a pool needs at least one connection")
        self.reactor: IReactorTime = reactor
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
        self._fork = _base.GENERATION
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
        if self._fork != _base.GENERATION:
            return RedisWrongProcessError(_base.advice("pool", self.address, self._pid))
        return None

    def _call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        shared = self.shared
        n = len(shared)
        # Fast path (what _check tests, inlined): round-robin over the shared connections,
        # unless the pool may still grow and the next connection is busy.
        if n and self._fork == _base.GENERATION and not self._closed:
            conn = shared[self._next % n]
            if n >= self.size or not conn.pending:
                self._next += 1
                return conn.send(pack_command(args), transform)
        return defer.ensureDeferred(self._callSlow(args, transform))

    async def _callSlow(self, args: tuple[Any, ...], transform: Transform) -> Any:
        conn = await self.shared_connection()
        return await conn.send(pack_command(args), transform)

    async def shared_connection(self) -> RedisConnection:
        """A connection in shared use (the pool grows up to ``size``, or waits for one):
        what a pipeline is sent on.  Raises when the pool is closed or was forked."""
        problem = self._check()
        if problem is not None:
            raise problem
        return await self._sharedConnection()

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

    def endpoint(self) -> IStreamClientEndpoint:
        """The client endpoint for this pool's address (TCP, TLS or Unix socket); the
        pool's reactor must then also provide ``IReactorTCP`` / ``IReactorUNIX``."""
        timeout = self.connectTimeout or 30.0
        if self.unixSocket:
            return UNIXClientEndpoint(IReactorUNIX(self.reactor), self.unixSocket, timeout=timeout)
        tcp = TCP4ClientEndpoint(IReactorTCP(self.reactor), self.host, self.port, timeout=timeout)
        return wrapClientTLS(self.tls, tcp) if self.tls is not None else tcp

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
        conn = cast(RedisConnection, await self.endpoint().connect(factory))
        handshake = []
        auth = self.auth_command()
        if auth is not None:
            handshake.append(conn.execute(*auth))
        if self.db:
            handshake.append(conn.execute("SELECT", self.db))
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
                conn.ping().addErrback(lambda f: None)

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
