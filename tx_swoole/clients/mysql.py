"""Async MySQL/MariaDB client for any Twisted program: connections, a pool, transactions.

``pool = MySQLPool(host, port, user=..., password=..., database=...)`` connects lazily on
first use (create it in ``worker_start``: one pool per process).  Statements return Deferreds
(``await`` them in ``async def``):

- ``await pool.query(sql, args)`` runs ``COM_QUERY`` with ``%s`` / ``%(name)s`` parameters
  escaped client-side (:func:`~tx_swoole.clients._mysql.escape`) and returns a
  :class:`Result` (``rows``, ``dicts()``, ``scalar()``, ``affected_rows``, ``insert_id``;
  ``next`` for the further result sets of a procedure or of ``multi_statements``);
- ``await pool.execute(sql, args)`` runs a server-side prepared statement (binary protocol;
  statements are prepared once per connection and cached);
- ``async with pool.transaction() as tx:`` runs ``tx.query``/``tx.execute`` in one
  transaction: committed at the end, rolled back on an exception;
- ``async with pool.connection() as conn:`` checks a connection out for anything else.

Types come back as Python's: integers, ``Decimal``, ``float``, ``datetime``/``date``/
``timedelta``, JSON (MySQL's type, and MariaDB's columns of JSON format) parsed, ``None`` for
NULL, ``bytes`` for binary columns, ``str`` for the rest.

**A result never reaches the wrong caller.**  A connection runs one statement at a time (with
``pipeline=N``, up to N reads queued in the pool are sent together and answered in order) and
each answer is matched to its statement.  A statement past its timeout (or cancelled) fails
at once for its caller with :class:`~tx_swoole.errors.MySQLTimeoutError`; the pool kills it
(``KILL QUERY`` from a connection of its own) and its answer is dropped when it comes, so the
connection serves the next caller with the next answer; if the answer does not come within
``connect_timeout`` more, the connection is closed.  A connection is never given back to the
pool inside a transaction: one left open there is closed (the server rolls it back).

Resource handling: at most ``size`` connections, each holding one packet at a time in memory
(at most ``max_packet`` bytes) and the result it builds; ``await pool.close()`` closes
everything.  ``LOCAL INFILE`` is off; ``local_infile=DIR`` allows files under ``DIR`` only.
Error handling: server errors are :class:`~tx_swoole.errors.MySQLServerError` with ``errno``
and ``sqlstate`` (the connection stays usable); refused, lost and closed connections
:class:`~tx_swoole.errors.MySQLConnectionError`; slow ones ``MySQLTimeoutError``; protocol
violations ``MySQLProtocolError`` (the connection is closed).  After failed connects the pool
backs off with jitter and fails at once meanwhile; used after ``fork`` it raises
``MySQLWrongProcessError``.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tx_swoole.clients import _base
from tx_swoole.clients._base import client_endpoint, fast_write
from tx_swoole.clients._mysql import (
    COM_PING,
    COM_QUERY,
    COM_QUIT,
    COM_STMT_CLOSE,
    COM_STMT_PREPARE,
    MARIADB_EXTENDED_METADATA,
    NO_BACKSLASH_ESCAPES,
    STATUS_IN_TRANS,
    Column,
    Handshake,
    PacketReader,
    Reader,
    Result,
    Statement,
    escape,
    execute_packet,
    interpolate,
    packets,
    read_ok,
    read_prepare,
    read_result,
)
from tx_swoole.clients._pooling import Errors, Pool
from tx_swoole.errors import (
    MySQLAcquireTimeoutError,
    MySQLConnectionError,
    MySQLError,
    MySQLPoolClosedError,
    MySQLProtocolError,
    MySQLServerError,
    MySQLTimeoutError,
    MySQLWrongProcessError,
)

__all__ = [
    "Column",
    "MySQLConnection",
    "MySQLPool",
    "Result",
    "Transaction",
    "escape",
]
_ERRORS = Errors(MySQLError, MySQLConnectionError, MySQLTimeoutError, MySQLAcquireTimeoutError,
                 MySQLPoolClosedError, MySQLWrongProcessError)  # fmt: skip
_NEVER = float("inf")
_INFILE_CHUNK = 1 << 16


class _Command:
    """One statement on a connection: its packets, the reader of its answer, its caller."""

    __slots__ = ("conn", "payload", "reader", "deferred", "timeout", "timer", "abandoned", "sql",
                 "deadline", "pooled")  # fmt: skip

    def __init__(self, conn: MySQLConnection | None, payload: bytes, reader: Reader,
                 timeout: float, sql: str, deferred: defer.Deferred[Any] | None = None,
                 pooled: bool = False) -> None:  # fmt: skip
        self.conn = conn
        self.payload, self.reader, self.timeout, self.sql = payload, reader, timeout, sql
        # (a statement queued in the pool comes with the Deferred its caller holds)
        self.deferred: defer.Deferred[Any] = deferred or defer.Deferred(self.cancel)
        self.timer: Any = None
        self.deadline = _NEVER
        self.abandoned = False  # the caller has its error; the answer is dropped when it comes
        self.pooled = pooled  # the connection goes back to the pool when the caller is answered

    def cancel(self, d: defer.Deferred[Any]) -> None:
        if self.conn is not None:
            self.conn.abandon(self)  # killed if it runs, dropped if it waits
            self.settle()

    def settle(self) -> None:
        """The caller is about to be answered: give the connection back to its pool first
        (a killed statement still running keeps it out until it ends)."""
        if self.pooled and self.conn is not None:
            self.pooled = False
            self.conn.pool.giveBack(self.conn)


class MySQLConnection(Protocol):
    """One connection: the handshake, then one statement at a time, queued in order (or,
    for the pool's ``pipeline``, reads sent behind the running one: ``sent``)."""

    def __init__(self, pool: MySQLPool) -> None:
        self.pool = pool
        self.address = pool.address
        self.clock: IReactorTime = pool.reactor
        self.reader = PacketReader(pool.maxPacket)
        self.handshake = Handshake(
            pool.user, pool.password, pool.database, tls=pool.tls is not None,
            secure_channel=pool.unixSocket is not None,
            multi_statements=pool.multiStatements, local_infile=pool.localInfile is not None,
            max_packet=pool.maxPacket,
        )  # fmt: skip
        self.ready: defer.Deferred[MySQLConnection] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.closedReason: MySQLError | None = None
        self.current: _Command | None = None  # the command whose answer is read now
        self.sent: deque[_Command] = deque()  # sent behind it (pipelined), answers to come
        self.queue: deque[_Command] = deque()  # not sent yet
        self._corked: list[bytes] | None = None  # writes held back to go out as one
        self.statements: OrderedDict[str, Statement] = OrderedDict()
        self.columns: dict[bytes, Column] = {}  # column definitions seen, by their bytes
        self.lastUsed = self.clock.seconds()
        self.exclusive = False
        self.extended = False
        self.threadId = 0
        self.serverVersion = ""
        self.status = 0
        self._write: Callable[[bytes], None] = lambda data: None
        self._drainDeadline = _NEVER

    # -- the pool's view ---------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """True while a statement runs or waits (an abandoned one too, until its answer)."""
        return self.current is not None

    @property
    def inTransaction(self) -> bool:  # noqa: N802
        """What the server said last: a transaction is open on this connection."""
        return bool(self.status & STATUS_IN_TRANS)

    def abort(self, reason: MySQLError) -> None:
        self._fail(reason)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def checkTimeout(self, now: float) -> None:
        """Called by the pool's sweep: close a connection whose killed statement never ends."""
        cmd = self.current
        if cmd is not None and not cmd.abandoned and now >= cmd.deadline:
            self._timedOut(cmd)
        for cmd in [c for c in self.sent if not c.abandoned and now >= c.deadline]:
            self._timedOut(cmd)
        if self.current is not None and self.current.abandoned and now > self._drainDeadline:
            self.abort(MySQLConnectionError(
                f"{self.address}: a statement past its timeout did not end after KILL QUERY; "
                "connection closed"))  # fmt: skip

    # -- Twisted -----------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        self._write = fast_write(self.transport)

    def dataReceived(self, data: bytes) -> None:
        try:
            payloads = self.reader.feed(data)
        except MySQLProtocolError as e:
            self.abort(MySQLProtocolError(f"{self.address}: {e}"))
            return
        self.lastUsed = self.clock.seconds()  # (before the callbacks: see Pool._healthCheck)
        if not payloads:
            return
        if self.handshake.done:
            self._answer(payloads)
            reader = self.reader
            while reader.held and self.closedReason is None:  # answers to pipelined commands
                try:
                    payloads = reader.feed(b"")
                except MySQLProtocolError as e:
                    self.abort(MySQLProtocolError(f"{self.address}: {e}"))
                    return
                if payloads:
                    self._answer(payloads)
            return
        for i, payload in enumerate(payloads):
            if self.transport is None or self.closedReason is not None:
                return
            if self.handshake.done:  # (nothing follows the last handshake packet unasked)
                self._answer(payloads[i:])
                return
            self._handshake(payload)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        # (closedReason may be set already, by the pool's close: the callers still hear it)
        self._fail(self.closedReason or MySQLConnectionError(f"connection to {self.address} lost"))
        self.lost.callback(None)

    def _fail(self, reason: MySQLError) -> None:
        if self.closedReason is None:
            self.closedReason = reason
        if not self.ready.called:
            self.ready.errback(reason)
        commands = ([self.current] if self.current else []) + list(self.sent) + list(self.queue)
        self.current = None
        self.sent.clear()
        self.queue.clear()
        self.reader.split = False
        for cmd in commands:
            if cmd.timer is not None and cmd.timer.active():
                cmd.timer.cancel()
            cmd.settle()
            if not cmd.deferred.called:
                cmd.deferred.errback(type(reason)(str(reason)))

    # -- the handshake -----------------------------------------------------------------------------
    def _handshake(self, payload: bytes) -> None:
        hs = self.handshake
        try:
            reply = hs.receive(payload)
        except MySQLServerError as e:
            self.abort(e)  # access denied, unknown database ...: errno and sqlstate kept
            return
        except MySQLError as e:
            self.abort(type(e)(f"{self.address}: {e}"))
            return
        except Exception as e:
            self.abort(MySQLProtocolError(f"{self.address}: bad handshake packet ({e})"))
            return
        if reply is not None:
            self._send(reply, self.reader.seq)
        if hs.startTLS:
            transport: Any = self.transport
            transport.startTLS(self.pool.tls)
            self._write = transport.write
            self._send(hs.response_after_tls(), self.reader.seq)
        if hs.done:
            self.threadId, self.serverVersion = hs.threadId, hs.serverVersion
            self.status = hs.status
            self.extended = bool(hs.capabilities & MARIADB_EXTENDED_METADATA)
            self.ready.callback(self)

    def _send(self, payload: bytes, seq: int) -> None:
        data, self.reader.seq = packets(payload, seq)
        self._out(data)

    def _out(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            self._write(data)

    # -- statements --------------------------------------------------------------------------------
    def command(self, payload: bytes, reader: Reader, timeout: float | None = None,
                sql: str = "") -> defer.Deferred[Any]:  # fmt: skip
        """Send ``payload`` (a command) when the ones before it are answered; the Deferred
        fires with what ``reader`` makes of the answer."""
        seconds = self.pool.queryTimeout if timeout is None else timeout
        return self._command(_Command(self, payload, reader, seconds, sql))

    def _command(self, cmd: _Command) -> defer.Deferred[Any]:
        if self.closedReason is not None or self.transport is None:
            cmd.settle()
            cmd.deferred.errback(self.closedReason or MySQLConnectionError(f"{self.address}: "
                                                                           "closed"))  # fmt: skip
            return cmd.deferred
        if self.current is None:
            self._start(cmd)
        else:
            self.queue.append(cmd)
        return cmd.deferred

    def _start(self, cmd: _Command) -> None:
        try:
            next(cmd.reader)
        except StopIteration:  # a command the server does not answer (COM_STMT_CLOSE)
            self._send(cmd.payload, 0)
            if self.queue:
                self._start(self.queue.popleft())
            return
        self.current = cmd
        self._arm(cmd)
        self._send(cmd.payload, 0)

    def _arm(self, cmd: _Command) -> None:
        if cmd.timeout:  # checked by the pool's sweep; a shorter one gets its own timer
            if cmd.timeout < self.pool.sweepInterval:
                cmd.timer = self.clock.callLater(cmd.timeout, self._timedOut, cmd)
            else:
                cmd.deadline = self.clock.seconds() + cmd.timeout

    def _answer(self, payloads: list[bytes]) -> None:
        cmd = self.current
        if cmd is None or self.closedReason is not None:
            self.abort(MySQLProtocolError(f"{self.address}: a packet with no statement pending"))
            return
        try:
            out = cmd.reader.send(payloads)
        except StopIteration as stop:
            self._finish(cmd, stop.value, None)
        except MySQLServerError as e:
            self._finish(cmd, None, e)
        except MySQLProtocolError as e:
            self.abort(MySQLProtocolError(f"{self.address}: {e}"))
        except Exception as e:  # a packet the reader could not parse: the stream is lost
            self.abort(MySQLProtocolError(f"{self.address}: malformed packet ({e!r})"))
        else:
            if out is not None:  # the bytes of a LOCAL INFILE, then an empty packet
                seq = self.reader.seq
                for start in range(0, len(out), _INFILE_CHUNK):
                    self._send(out[start : start + _INFILE_CHUNK], seq)
                    seq = self.reader.seq
                self._send(b"", seq)

    def _finish(self, cmd: _Command, result: Any, failure: MySQLServerError | None) -> None:
        if self.sent:  # the next pipelined answer is read from here on
            current = self.current = self.sent.popleft()
            self.reader.seq = 1
            self.reader.split = bool(self.sent)
            if current.abandoned:  # given up while it waited: its answer is dropped, in time
                self._drainDeadline = self.clock.seconds() + (self.pool.connectTimeout or 5.0)
        else:
            self.current = None
        if cmd.timer is not None and cmd.timer.active():
            cmd.timer.cancel()
        if isinstance(result, Result):
            last = result
            while last.next is not None:
                last = last.next
            self.status = last.status
        elif result is not None and hasattr(result, "status"):  # an OK
            self.status = result.status
        cmd.settle()
        if self.current is None and not self.queue:
            # the last of a pipeline: the connection goes back before its caller is answered,
            # as a statement's alone does (settle)
            self.pool.statementEnded(self)
        if not cmd.deferred.called and not cmd.abandoned:
            if failure is not None:
                cmd.deferred.errback(failure)
            else:
                cmd.deferred.callback(result)
        if self.current is not None:
            return
        if self.queue:
            self._start(self.queue.popleft())
        else:
            self.pool.statementEnded(self)

    def _timedOut(self, cmd: _Command) -> None:
        if cmd.deferred.called:
            return
        cmd.settle()
        cmd.deferred.errback(MySQLTimeoutError(
            f"statement on {self.address} timed out after {cmd.timeout}s (query_timeout); "
            f"it is being killed: {cmd.sql[:80]!r}"))  # fmt: skip
        self.abandon(cmd)

    def abandon(self, cmd: _Command) -> None:
        """The caller of ``cmd`` has given up: kill it if it runs, drop it if it waits."""
        cmd.abandoned = True
        if cmd in self.queue:
            self.queue.remove(cmd)
            return
        if cmd is self.current:
            self._drainDeadline = self.clock.seconds() + (self.pool.connectTimeout or 5.0)
            if not self.sent:  # (with commands sent behind it, KILL QUERY could hit one of
                self.pool.killStatement(self)  # those: its answer is waited for instead)

    def query(self, sql: str, args: Any = None, timeout: float | None = None,
              ) -> defer.Deferred[Result]:  # fmt: skip
        """``COM_QUERY`` with ``args`` escaped into ``sql``; the :class:`Result`."""
        try:
            text = interpolate(sql, args, bool(self.status & NO_BACKSLASH_ESCAPES))
        except (TypeError, ValueError, KeyError) as e:
            return defer.fail(e)
        reader = read_result(self.extended, False, self._infile, self.columns)
        return self.command(bytes((COM_QUERY,)) + text.encode(), reader, timeout, text)

    async def prepare(self, sql: str, timeout: float | None = None) -> Statement:
        """The prepared statement for ``sql`` on this connection (cached)."""
        stmt = self.statements.get(sql)
        if stmt is not None:
            self.statements.move_to_end(sql)
            return stmt
        payload = bytes((COM_STMT_PREPARE,)) + sql.encode()
        prepared = cast(Statement, await self.command(payload, read_prepare(sql), timeout, sql))
        self.statements[sql] = prepared
        if len(self.statements) > self.pool.statementCacheSize:
            _, old = self.statements.popitem(last=False)
            if self.transport is not None:  # COM_STMT_CLOSE has no answer
                self._closeStatement(old)
        return prepared

    def _closeStatement(self, stmt: Statement) -> None:
        payload = bytes((COM_STMT_CLOSE,)) + stmt.id.to_bytes(4, "little")
        if self.current is None:
            self._send(payload, 0)
        else:
            self.queue.append(_Command(None, payload, _no_answer(), 0, "COM_STMT_CLOSE"))

    def execute(self, sql: str, args: Sequence[Any] = (), timeout: float | None = None,
                ) -> defer.Deferred[Result]:  # fmt: skip
        """A prepared statement (binary protocol) with ``args``; the :class:`Result`."""
        stmt = self.statements.get(sql)
        if stmt is None:  # prepared first, then run
            return defer.ensureDeferred(self._prepareAndRun(sql, args, timeout))
        self.statements.move_to_end(sql)
        return self._run(stmt, args, timeout)

    async def _prepareAndRun(self, sql: str, args: Sequence[Any], timeout: float | None,
                             ) -> Result:  # fmt: skip
        return await self._run(await self.prepare(sql, timeout), args, timeout)

    def _run(self, stmt: Statement, args: Sequence[Any],
             timeout: float | None) -> defer.Deferred[Result]:  # fmt: skip
        try:
            payload = execute_packet(stmt, args)
        except TypeError as e:
            return defer.fail(e)
        reader = read_result(self.extended, True, self._infile, self.columns)
        return self.command(payload, reader, timeout, stmt.sql)

    def pooled(self, prepared: bool, sql: str, args: Any, timeout: float | None,
               deferred: defer.Deferred[Any] | None) -> defer.Deferred[Any]:  # fmt: skip
        """:meth:`query` or :meth:`execute` for the pool, which holds this connection
        exclusively for it: the connection goes back to the pool as the caller is answered
        (``deferred``: the one the caller already holds, for a statement queued in the pool)."""
        seconds = self.pool.queryTimeout if timeout is None else timeout
        try:
            if prepared:
                stmt = self.statements.get(sql)
                if stmt is None:  # prepared first, then run
                    d = self.execute(sql, args, timeout)
                    d.addBoth(self._giveBackAfter)
                    if deferred is None:
                        return d
                    d.chainDeferred(deferred)
                    return deferred
            payload, sql = self._payload(prepared, sql, args)
        except (TypeError, ValueError, KeyError) as e:
            self.pool.giveBack(self)
            if deferred is None:
                return defer.fail(e)
            deferred.errback(e)
            return deferred
        reader = read_result(self.extended, prepared, self._infile, self.columns)
        return self._command(_Command(self, payload, reader, seconds, sql, deferred, True))

    def _payload(self, prepared: bool, sql: str, args: Any) -> tuple[bytes, str]:
        """The command running ``sql`` with ``args`` (prepared here already, if ``prepared``),
        and the SQL it runs."""
        if prepared:
            self.statements.move_to_end(sql)
            return execute_packet(self.statements[sql], args), sql
        sql = interpolate(sql, args, bool(self.status & NO_BACKSLASH_ESCAPES))
        return bytes((COM_QUERY,)) + sql.encode(), sql

    def _giveBackAfter(self, result: Any) -> Any:
        self.pool.giveBack(self)
        return result

    # -- pipelining (the pool's ``pipeline`` setting) ----------------------------------------------
    def cork(self) -> None:
        """Hold what is sent from now on until :meth:`uncork`, which writes it at once."""
        self._corked = []

    def uncork(self) -> None:
        data, self._corked = self._corked, None
        if data:
            self._write(b"".join(data))

    def canRide(self, prepared: bool, sql: str) -> bool:
        """Whether a pooled statement may be sent now, behind what runs here, without waiting
        for its answer: only behind reads (``SELECT``: nothing that opens a transaction or
        changes the session), a statement already prepared here or a text query (without
        ``multi_statements``), up to ``pipeline`` in flight.  (What rides is a read too.)"""
        current = self.current
        return (
            current is not None and current.pooled and not current.abandoned
            and len(self.sent) + 1 < self.pool.pipeline and not self.queue
            and self.closedReason is None and self.transport is not None
            and not self.status & STATUS_IN_TRANS and _is_read(current.sql) and _is_read(sql)
            and not self.pool.multiStatements and (not prepared or sql in self.statements)
        )  # fmt: skip

    def ride(self, prepared: bool, sql: str, args: Any, timeout: float | None,
             deferred: defer.Deferred[Any]) -> None:  # fmt: skip
        """Send a pooled statement now, behind the ones in flight (:meth:`canRide` said
        so); its answer comes after theirs and fires ``deferred``."""
        seconds = self.pool.queryTimeout if timeout is None else timeout
        try:
            payload, sql = self._payload(prepared, sql, args)
        except (TypeError, ValueError, KeyError) as e:
            deferred.errback(e)
            return
        reader = read_result(self.extended, prepared, self._infile, self.columns)
        cmd = _Command(self, payload, reader, seconds, sql, deferred)
        next(cmd.reader)
        self._arm(cmd)
        self.sent.append(cmd)
        self.reader.split = True
        self._out(packets(payload, 0)[0])  # (the sequence id expected stays the current answer's)

    def cancelPooled(self, d: defer.Deferred[Any]) -> None:
        """The caller of a statement queued in the pool and since started here gave up (the
        connection is held for that caller alone: what runs on it is theirs)."""
        cmd = self.current
        if cmd is None:
            return
        for sent in self.sent:  # pipelined behind the current one
            if sent.deferred is d:
                if not sent.abandoned:
                    sent.cancel(d)
                return
        if cmd.abandoned:
            return
        if cmd.deferred is d:
            cmd.cancel(d)
        elif not self.sent:  # its PREPARE or the EXECUTE after it, on Deferreds of their own
            cmd.deferred.cancel()

    def ping(self, timeout: float | None = None) -> defer.Deferred[Any]:
        return self.command(bytes((COM_PING,)), read_ok(), timeout, "COM_PING")

    def _infile(self, name: str) -> bytes:
        """The contents of a LOCAL INFILE the server asks for: b"" (refused) unless the file
        is under ``local_infile``."""
        allowed = self.pool.localInfile
        if allowed is None:
            return b""
        path = os.path.realpath(name)
        if not path.startswith(os.path.realpath(allowed) + os.sep):
            return b""
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def quit(self) -> None:
        """Say goodbye (``COM_QUIT``) and close."""
        transport: Any = self.transport
        if transport is not None:
            if self.current is None:
                self._send(bytes((COM_QUIT,)), 0)
            transport.loseConnection()


def _is_read(sql: str) -> bool:
    """A statement that only reads (it begins with ``SELECT``)."""
    return sql.lstrip()[:6].upper() == "SELECT"


def _no_answer() -> Reader:
    """The reader of a command the server does not answer (``COM_STMT_CLOSE``)."""
    return
    yield  # a generator that ends at once


class Transaction:
    """Statements on one checked-out connection inside ``BEGIN`` ... ``COMMIT``."""

    def __init__(self, conn: MySQLConnection) -> None:
        self.connection = conn

    def query(self, sql: str, args: Any = None, timeout: float | None = None,
              ) -> defer.Deferred[Result]:  # fmt: skip
        return self.connection.query(sql, args, timeout)

    def execute(self, sql: str, args: Sequence[Any] = (), timeout: float | None = None,
                ) -> defer.Deferred[Result]:  # fmt: skip
        return self.connection.execute(sql, args, timeout)


class MySQLPool(Pool):
    """A lazily connected pool of MySQL connections; see the module docstring.

    ``unix_socket`` connects to a socket path instead of host:port; ``tls`` is an
    ``IOpenSSLClientConnectionCreator`` (``optionsForClientTLS(host)``) for TLS after the
    greeting.  ``pipeline``: statements a connection may carry at once (see :meth:`_serveQueued`).
    Timeouts are seconds (0: none).  ``health_check_interval``: idle connections are
    pinged this often; ``idle_timeout``: idle longer, they are closed (0: never).
    """

    __slots__ = (
        "queryTimeout", "multiStatements", "localInfile", "maxPacket", "statementCacheSize",
        "pipeline", "_draining", "_queued", "host", "port", "unixSocket", "tls", "user",
        "password", "database",
    )  # fmt: skip

    errors = _ERRORS
    kind = "MySQLPool"
    shared: list[MySQLConnection]

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3306,
        *,
        user: str = "root",
        password: str = "",
        database: str | None = None,
        size: int = 10,
        connect_timeout: float = 5.0,
        query_timeout: float = 30.0,
        acquire_timeout: float = 5.0,
        unix_socket: str | None = None,
        tls: Any = None,
        multi_statements: bool = False,
        local_infile: str | None = None,
        max_packet: int = 64 * 1024 * 1024,
        statement_cache_size: int = 256,
        pipeline: int = 1,
        health_check_interval: float = 30.0,
        idle_timeout: float = 0.0,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(
            reactor, f"unix:{unix_socket}" if unix_socket else f"{host}:{port}", size,
            connect_timeout, query_timeout, acquire_timeout, health_check_interval, idle_timeout,
        )  # fmt: skip
        self.host, self.port, self.unixSocket, self.tls = host, port, unix_socket, tls
        self.user, self.password, self.database = user, password, database
        self.queryTimeout = query_timeout
        self.multiStatements = multi_statements
        self.localInfile = local_infile
        self.maxPacket = max_packet
        self.statementCacheSize = statement_cache_size
        if pipeline.__class__ is not int or pipeline < 1:
            raise ValueError(f"pipeline={pipeline!r}: a whole number of statements in flight per "
                             "connection, at least 1 (1: one at a time)")  # fmt: skip
        self.pipeline = pipeline
        self._draining: set[MySQLConnection] = set()
        self._queued: deque[list[Any]] = deque()  # statements waiting for a free connection

    # -- connections -------------------------------------------------------------------------------
    def endpoint(self) -> Any:
        """Plain TCP or a Unix socket: MySQL starts TLS after the greeting (see Handshake)."""
        return client_endpoint(self.reactor, self.host, self.port, self.unixSocket, None,
                               self.connectTimeout)  # fmt: skip

    async def _connect(self) -> MySQLConnection:
        factory = Factory.forProtocol(lambda: MySQLConnection(self))
        conn = cast(MySQLConnection, await self.endpoint().connect(factory))
        ready = conn.ready
        if self.connectTimeout:
            ready.addTimeout(self.connectTimeout, self.reactor)
        try:
            return await ready
        except defer.TimeoutError:
            conn.abort(MySQLTimeoutError(f"{self.address}: no handshake within "
                                         f"{self.connectTimeout}s"))  # fmt: skip
            raise MySQLTimeoutError(
                f"connect to {self.address} timed out after {self.connectTimeout}s (handshake)"
            ) from None

    def _reusable(self, conn: Any) -> bool:
        return not conn.status & STATUS_IN_TRANS  # (conn.inTransaction without its frame)

    def _pick(self) -> Any:
        return self.shared.pop()

    def _release(self, conn: Any) -> None:
        if conn.current is not None and conn.closedReason is None and not self._closed:
            conn.exclusive = False
            self._draining.add(conn)  # a killed statement still running: back when it ends
            return
        super()._release(conn)
        if self._queued:
            self._serveQueued()

    def statementEnded(self, conn: MySQLConnection) -> None:
        """A connection's abandoned statement has ended: it may serve again."""
        if conn in self._draining:
            self._draining.discard(conn)
            self._release(conn)

    def killStatement(self, conn: MySQLConnection) -> None:
        """``KILL QUERY`` the statement running on ``conn``, from a connection of its own."""
        d = defer.ensureDeferred(self._killFrom(conn.threadId))
        d.addErrback(lambda f: conn.abort(MySQLConnectionError(
            f"{self.address}: KILL QUERY failed ({f.value}); connection closed")))  # fmt: skip

    async def _killFrom(self, thread_id: int) -> None:
        killer = await self._connect()
        try:
            await killer.command(bytes((COM_QUERY,)) + b"KILL QUERY %d" % thread_id,
                                 read_result(False), self.connectTimeout or 5.0)  # fmt: skip
        finally:
            killer.quit()

    def _ping(self, conn: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = conn.ping(self.connectTimeout or 5.0)
        return d.addErrback(
            lambda f: conn.abort(MySQLConnectionError(f"{self.address}: health check failed"))
        )

    # -- statements --------------------------------------------------------------------------------
    def query(self, sql: str, args: Any = None, timeout: float | None = None,
              ) -> defer.Deferred[Result]:  # fmt: skip
        """``COM_QUERY`` on a free connection (see :meth:`MySQLConnection.query`); with none
        free, queued for the next one (up to ``acquire_timeout``)."""
        return self._statement(False, sql, args, timeout)

    def execute(self, sql: str, args: Sequence[Any] = (), timeout: float | None = None,
                ) -> defer.Deferred[Result]:  # fmt: skip
        """A prepared statement on a free connection (see :meth:`MySQLConnection.execute`)."""
        return self._statement(True, sql, args, timeout)

    def _statement(self, prepared: bool, sql: str, args: Any,
                   timeout: float | None) -> defer.Deferred[Result]:  # fmt: skip
        shared = self.shared
        if self._closed or self._fork != _base.GENERATION:
            return defer.ensureDeferred(self._slow(prepared, sql, args, timeout))
        if shared:
            conn = shared.pop()
            conn.exclusive = True
            return conn.pooled(prepared, sql, args, timeout, None)
        if len(self.connections) + self._connecting < self.size or not self.connections:
            return defer.ensureDeferred(self._slow(prepared, sql, args, timeout))
        entry: list[Any] = []
        d: defer.Deferred[Result] = defer.Deferred(lambda _: self._unqueue(entry))
        entry += [d, prepared, sql, args, timeout, self.reactor.seconds(), None]
        self._queued.append(entry)
        return d

    async def _slow(self, prepared: bool, sql: str, args: Any, timeout: float | None) -> Result:
        async with self.connection() as conn:
            if prepared:
                return await conn.execute(sql, args, timeout)
            return await conn.query(sql, args, timeout)

    def _unqueue(self, entry: list[Any]) -> None:
        if entry in self._queued:
            self._queued.remove(entry)
        elif entry[6] is not None:  # started on that connection since
            entry[6].cancelPooled(entry[0])

    def giveBack(self, conn: MySQLConnection) -> None:
        """A statement on ``conn`` for a caller of :meth:`query`/:meth:`execute` is answered."""
        self._release(conn)

    def _serveQueued(self) -> None:
        """Statements queued for a connection: onto the free ones (callers of
        ``connection()`` waiting go first)."""
        queued = self._queued
        while queued and self.shared and not self._waiters:
            entry = queued.popleft()
            d, prepared, sql, args, timeout, _, _ = entry
            conn = entry[6] = self.shared.pop()
            conn.exclusive = True
            if self.pipeline == 1 or not queued or prepared and sql not in conn.statements:
                conn.pooled(prepared, sql, args, timeout, d)
                continue
            # Pipelining: the reads queued behind this one go with it, in one write.
            conn.cork()
            try:
                conn.pooled(prepared, sql, args, timeout, d)
                while queued and conn.canRide(queued[0][1], queued[0][2]):
                    entry = queued.popleft()
                    entry[6] = conn
                    conn.ride(entry[1], entry[2], entry[3], entry[4], entry[0])
            finally:
                conn.uncork()

    def _forget(self, conn: Any) -> None:
        super()._forget(conn)
        if self._queued and not self._closed:  # a connection less: a new one for the queue
            d, prepared, sql, args, timeout, _, _ = self._queued.popleft()
            defer.ensureDeferred(self._slow(prepared, sql, args, timeout)).chainDeferred(d)

    def _sweep(self) -> None:
        super()._sweep()
        if self._queued and self.acquireTimeout:
            late = self.reactor.seconds() - self.acquireTimeout
            for entry in [e for e in self._queued if e[5] <= late]:
                self._queued.remove(entry)
                entry[0].errback(MySQLAcquireTimeoutError(self._acquireTimeoutMessage()))

    def _failWaiters(self, error: Exception) -> None:
        super()._failWaiters(error)
        queued, self._queued = self._queued, deque()
        for entry in queued:
            if not entry[0].called:
                entry[0].errback(type(error)(str(error)))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[MySQLConnection]:
        """Check a connection out exclusively; it is always given back (closed if it was left
        inside a transaction)."""
        problem = self._check()
        if problem is not None:
            raise problem
        conn = cast(MySQLConnection, await self._acquire())
        try:
            yield conn
        finally:
            self._release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``BEGIN`` ... ``COMMIT`` on one connection; ``ROLLBACK`` on an exception (and the
        connection closed if even that fails); a lost connection raises
        :class:`MySQLConnectionError` (the server rolled back)."""
        async with self.connection() as conn:
            await conn.query("BEGIN")
            try:
                yield Transaction(conn)
            except BaseException:
                if conn.closedReason is None:
                    try:
                        await conn.query("ROLLBACK")
                    except MySQLError:
                        conn.abort(MySQLConnectionError(f"{self.address}: ROLLBACK failed"))
                raise
            await conn.query("COMMIT")

    async def close(self) -> None:
        """Close every connection; later calls fail with MySQLPoolClosedError."""
        queued, self._queued = self._queued, deque()
        for entry in queued:
            entry[0].errback(MySQLPoolClosedError(f"pool for {self.address} is closed"))
        for conn in list(self.connections):
            if conn.current is None:
                conn.quit()
        await super().close()
