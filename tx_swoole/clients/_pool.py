"""The Redis pool: connections made lazily, shared round-robin or checked out, back-off.

See :mod:`tx_swoole.clients.redis` (the public face) for what it promises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from tx_swoole.clients import _base
from tx_swoole.clients._base import client_endpoint
from tx_swoole.clients._commands import (
    IRedisCommands,
    RedisCommands,
    ScanCommands,
    Transform,
    stream_read_reply,
)
from tx_swoole.clients._connection import IRedisConnector, RedisConnection
from tx_swoole.clients._pipeline import Pipeline, Script
from tx_swoole.clients._pooling import NEVER, Errors, Pool
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
_ERRORS = Errors(RedisError, RedisConnectionError, RedisTimeoutError, RedisAcquireTimeoutError,
                 RedisPoolClosedError, RedisWrongProcessError)  # fmt: skip


@implementer(IRedisCommands, IRedisConnector)
class RedisPool(Pool, RedisCommands, ScanCommands):
    """A lazily connected pool of Redis connections with implicit pipelining.

    ``unix_socket`` connects to a Unix socket path instead of host:port; ``tls`` is an
    ``IOpenSSLClientConnectionCreator`` (``twisted.internet.ssl.optionsForClientTLS(host)``)
    for TLS.  ``encoding`` decodes replies to str.  Timeouts are seconds (0: none).
    ``health_check_interval``: idle connections are PINGed this often; ``idle_timeout``:
    connections idle longer are closed (0: never).
    """

    __slots__ = ("encoding", "_next", "host", "port", "unixSocket", "tls", "db", "username",
                 "password")  # fmt: skip

    errors = _ERRORS
    shared: list[RedisConnection]

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
        super().__init__(
            reactor, unix_socket or f"{host}:{port}", size, connect_timeout, command_timeout,
            acquire_timeout, health_check_interval, idle_timeout,
        )  # fmt: skip
        self.host, self.port, self.unixSocket, self.tls = host, port, unix_socket, tls
        self.db, self.username, self.password = db, username, password
        self.encoding = encoding
        self._next = 0

    def _reusable(self, conn: Any) -> bool:
        return not (conn.dirty or conn.pending)

    def _ping(self, conn: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = conn.ping()
        return d.addErrback(lambda f: None)

    # -- command path --------------------------------------------------------------------------
    def call(self, args: tuple[Any, ...], transform: Transform = None) -> defer.Deferred[Any]:
        """Run the command ``args``; ``transform`` converts its reply (what every command
        method calls)."""
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

    _call = call

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
                return cast(RedisConnection, await self._newConnection(shared=True))
        if self.shared:
            self._next += 1
            return self.shared[self._next % len(self.shared)]
        await self._waitForRelease()
        return await self._sharedConnection()

    def _grow(self) -> None:
        d = defer.ensureDeferred(self._newConnection(shared=True))
        d.addErrback(lambda f: None)  # the error is kept in _lastError for the next caller

    def endpoint(self) -> IStreamClientEndpoint:
        """The client endpoint for this pool's address (TCP, TLS or Unix socket); the
        pool's reactor must then also provide ``IReactorTCP`` / ``IReactorUNIX``."""
        return client_endpoint(self.reactor, self.host, self.port, self.unixSocket, self.tls,
                               self.connectTimeout)  # fmt: skip

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
            deadline = self.reactor.seconds() + (block or NEVER) + (self.commandTimeout or NEVER)
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
