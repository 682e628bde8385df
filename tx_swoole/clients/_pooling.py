"""What the Redis and MySQL pools share: lazy connects with back-off, exclusive checkout with an
acquire timeout, the fork guard, idle eviction and health checks, closing.

A pool subclass says how to connect (``_connect``), which errors it raises (``errors``), whether
a connection given back may be used again (``_reusable``) and how to check an idle one
(``_ping``).  Connections provide ``lost`` (a Deferred fired when gone),
``closedReason``, ``exclusive``, ``lastUsed``, ``pending`` (true while busy), ``abort(reason)``
and ``checkTimeout(now)``.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, NamedTuple

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from tx_swoole.clients import _base

__all__ = ["Errors", "Pool"]
NEVER = float("inf")


class Errors(NamedTuple):
    """The exception classes a pool raises."""

    base: type[Exception]
    connection: type[Exception]
    timeout: type[Exception]
    acquire_timeout: type[Exception]
    closed: type[Exception]
    wrong_process: type[Exception]


class Pool:
    """Connections made lazily up to ``size``; see the module docstring."""

    # Slots: a pool has more attributes than an instance dict keeps inline (30 in 3.11);
    # past that the dict is a real one, and no method call on the pool is specialized.
    __slots__ = (
        "reactor", "address", "size", "connectTimeout", "commandTimeout", "acquireTimeout",
        "healthCheckInterval", "idleTimeout", "shared", "connections", "_connecting", "_waiters",
        "_failures", "_outage", "_retryAt", "_lastError", "_backoff", "_closed", "_fork", "_pid",
        "_sweeper", "sweepInterval", "_pingedAt",
    )  # fmt: skip

    errors: Errors
    kind = "pool"

    def __init__(self, reactor: IReactorTime | None, address: str, size: int,
                 connect_timeout: float, command_timeout: float, acquire_timeout: float,
                 health_check_interval: float, idle_timeout: float) -> None:  # fmt: skip
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        if size < 1:
            raise ValueError(f"size={size}: a pool needs at least one connection")
        self.reactor: IReactorTime = reactor
        self.address = address
        self.size = size
        self.connectTimeout = connect_timeout
        self.commandTimeout = command_timeout
        self.acquireTimeout = acquire_timeout
        self.healthCheckInterval = health_check_interval
        self.idleTimeout = idle_timeout
        self.shared: list[Any] = []  # connections not checked out (Redis: shared; MySQL: idle)
        self.connections: set[Any] = set()
        self._connecting = 0
        self._waiters: deque[defer.Deferred[None]] = deque()
        self._failures = 0  # outages in a row (connects failing together count once)
        self._outage = 0  # bumped when a failure is counted: attempts begun before it share it
        self._retryAt = 0.0
        self._lastError: Exception | None = None
        self._backoff = backoffPolicy(initialDelay=0.1, maxDelay=10.0, factor=2.0)
        self._closed = False
        self._fork = _base.GENERATION
        self._pid = os.getpid()
        self._sweeper: task.LoopingCall | None = None
        self.sweepInterval = min(x for x in (command_timeout / 4, 1.0) if x > 0)
        self._pingedAt: dict[Any, float] = {}  # when the health check last pinged each

    def __reduce__(self) -> Any:
        raise self.errors.wrong_process(
            f"a {type(self).__name__} cannot be sent to another process: create it in worker_start"
        )

    # -- to override -------------------------------------------------------------------------------
    async def _connect(self) -> Any:
        raise NotImplementedError

    def _connectError(self, e: BaseException) -> Exception:
        """The pool's error for a failed connect."""
        errors = self.errors
        if isinstance(e, errors.base):
            return e
        timed_out, message = _base.connect_failure(e, self.address, self.connectTimeout)
        return (errors.timeout if timed_out else errors.connection)(message)

    def _reusable(self, conn: Any) -> bool:
        """Whether a connection given back may serve again (else it is closed)."""
        return not conn.pending

    def _ping(self, conn: Any) -> defer.Deferred[Any]:
        """PING ``conn`` (failures handled: closed or ignored)."""
        raise NotImplementedError

    def _healthCheck(self, conn: Any) -> None:
        """PING an idle connection.  A ping is not a use: its answer leaves ``lastUsed`` as
        the callers left it (unless a caller's command is in flight too), so ``idle_timeout``
        still counts from the last caller."""
        before = conn.lastUsed
        self._pingedAt[conn] = self.reactor.seconds()

        def answered(result: Any) -> Any:
            if not conn.pending:
                conn.lastUsed = before
            return result

        self._ping(conn).addCallback(answered)

    def _pick(self) -> Any:
        """Take a connection out of ``shared`` for exclusive use: the least busy one."""
        conn = min(self.shared, key=lambda c: len(c.pending))
        self.shared.remove(conn)
        return conn

    # -- connections -------------------------------------------------------------------------------
    def _check(self) -> Exception | None:
        if self._closed:
            return self.errors.closed(f"pool for {self.address} is closed")
        if self._fork != _base.GENERATION:
            return self.errors.wrong_process(_base.advice(self.kind, self.address, self._pid))
        return None

    async def _newConnection(self, shared: bool) -> Any:
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
            self._lastError = error = self._connectError(e)
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

    def _forget(self, conn: Any) -> None:
        self.connections.discard(conn)
        self._pingedAt.pop(conn, None)
        if conn in self.shared:
            self.shared.remove(conn)
        self._wakeOne()

    # -- exclusive use -----------------------------------------------------------------------------
    async def _acquire(self) -> Any:
        deadline = self.reactor.seconds() + (self.acquireTimeout or NEVER)
        while True:
            if len(self.connections) + self._connecting < self.size:
                conn = await self._newConnection(shared=False)
                conn.exclusive = True
                return conn
            if self.shared:
                conn = self._pick()
                conn.exclusive = True
                return conn
            await self._waitForRelease(deadline)

    async def _waitForRelease(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = self.reactor.seconds() + (self.acquireTimeout or NEVER)
        remaining = deadline - self.reactor.seconds()
        message = self._acquireTimeoutMessage()
        if remaining <= 0:
            raise self.errors.acquire_timeout(message)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        if remaining != NEVER:
            d.addTimeout(remaining, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            raise self.errors.acquire_timeout(message) from None
        finally:
            if d in self._waiters:
                self._waiters.remove(d)

    def _acquireTimeoutMessage(self) -> str:
        return (
            f"no connection to {self.address} free within acquire_timeout="
            f"{self.acquireTimeout}s (size={self.size}); raise size or acquire_timeout"
        )

    def _release(self, conn: Any) -> None:
        conn.exclusive = False
        if conn.closedReason is not None:
            return
        if self._closed or not self._reusable(conn):
            conn.abort(self.errors.connection(f"{self.address}: closed after exclusive use"))
            return
        self.shared.append(conn)
        self._wakeOne()

    def _failWaiters(self, error: Exception) -> None:
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

    # -- housekeeping ------------------------------------------------------------------------------
    def _startSweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = task.LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.sweepInterval, now=False)

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        for conn in list(self.connections):
            conn.checkTimeout(now)
            idle = now - conn.lastUsed
            if conn.pending or conn.exclusive or conn.closedReason is not None:
                continue
            if self.idleTimeout and idle > self.idleTimeout:
                conn.abort(self.errors.connection(f"{self.address}: idle connection closed"))
            elif (
                self.healthCheckInterval
                and idle > self.healthCheckInterval
                and (now - self._pingedAt.get(conn, 0.0) > self.healthCheckInterval)
            ):
                self._healthCheck(conn)

    async def close(self) -> None:
        """Close every connection; later calls fail with the pool-closed error."""
        self._closed = True
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        lost = [c.lost for c in self.connections]
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.closedReason = self.errors.closed(f"pool for {self.address} is closed")
                conn.transport.loseConnection()
        for d in list(self._waiters):
            if not d.called:
                d.errback(self.errors.closed(f"pool for {self.address} is closed"))
        await defer.DeferredList(lost)
