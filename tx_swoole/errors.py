"""The one exception tree of tx_swoole.

Every exception the library raises on purpose derives from :class:`SwooleError`.  Where a
builtin means the same thing, the class inherits it too, so ``except TimeoutError`` and
``except ConnectionError`` keep working for callers who know nothing of this module.
"""

from __future__ import annotations

from typing import Any


class SwooleError(Exception):
    """Base of every error raised by tx_swoole on purpose."""


class ConfigError(SwooleError, ValueError):
    """A setting or config file is invalid.

    Raised by :mod:`tx_swoole.settings` and :mod:`tx_swoole.config` before anything binds.
    The message names the key, the value, what is allowed and, for typos, the closest valid
    key.  The caller should fix the configuration; retrying cannot help.
    """


class AppImportError(ConfigError):
    """A ``module:attribute`` reference (app or event hook) cannot be imported.

    Raised inside a worker while it boots.  The worker reports it and exits; the master does
    not respawn it in a hot loop.
    """


class FramingError(SwooleError):
    """A peer sent bytes that break the TCP framing (for example a negative length prefix).

    Raised by the sans-IO framers; the protocol closes the connection with reason ``limit``.
    """


class FrameTooLargeError(FramingError):
    """A framed TCP message is longer than ``package_max_length``.

    Raised by the sans-IO framers in :mod:`tx_swoole.protocols._framing`; the protocol closes
    the connection with reason ``limit``.  ``size`` is the declared or buffered length (a lower
    bound for EOF framing), ``limit`` the setting.
    """

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(
            f"{what} of {size} bytes exceeds package_max_length={limit}; "
            "raise package_max_length to accept it"
        )
        self.size = size
        self.limit = limit


class HTTPRequestError(SwooleError):
    """A request cannot be served; ``status`` is the HTTP status to answer with.

    Raised by the sans-IO request reader (:mod:`tx_swoole.protocols._http11`).  The HTTP
    protocol answers with ``status``, ``Connection: close`` and a short body, then closes.
    """

    status = 400
    reason = b"Bad Request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequestError(HTTPRequestError):
    """The bytes are not valid HTTP/1.x (→ 400)."""


class MultipartError(MalformedRequestError):
    """A ``multipart/form-data`` body is malformed (→ 400)."""


class HeaderTooLargeError(HTTPRequestError):
    """Request line + headers exceed ``http_header_max_length`` (→ 431)."""

    status = 431
    reason = b"Request Header Fields Too Large"


class BodyTooLargeError(HTTPRequestError):
    """The request body exceeds ``package_max_length`` (→ 413)."""

    status = 413
    reason = b"Payload Too Large"


class UploadLimitError(BodyTooLargeError):
    """An upload has more file parts than ``upload_max_files`` (→ 413)."""


class HTTPVersionError(HTTPRequestError):
    """The request is HTTP/0.9, HTTP/2.0 over HTTP/1 framing, or another unknown version
    (→ 505)."""

    status = 505
    reason = b"HTTP Version Not Supported"


class HTTP2PrefaceError(HTTPVersionError):
    """An HTTP/2 connection preface (``PRI * HTTP/2.0``) on an HTTP/1 connection: taken as
    h2c with prior knowledge when ``open_http2_protocol`` is on, else 505."""


class RequestTimeoutError(HTTPRequestError):
    """The request head (``http_header_timeout``) or body (``http_body_timeout``) did not
    arrive in time (→ 408)."""

    status = 408
    reason = b"Request Timeout"


class ProxyProtocolError(SwooleError, ValueError):
    """A listener with ``open_proxy_protocol`` got no valid PROXY header first; the connection
    is closed before the application sees it."""


class HeaderValueError(SwooleError, ValueError):
    """A response status, header name or value the application set cannot be sent.

    Raised by ``Response.end()``, ``write()`` and ``sendfile()`` (and ``status()``) before
    anything is sent: CR, LF or NUL in a name or value (response splitting), ``:`` or
    whitespace in a name, a status code outside 100..999.  Uncaught in a handler it becomes a
    ``500``; fix the value.
    """


class ResponseStateError(SwooleError, RuntimeError):
    """The application used a response in a way its state does not allow.

    Raised by ``Response.sendfile()`` after the response started, and by ``header()`` or
    ``status()`` once the head was sent.  A bug in the handler; uncaught it becomes a ``500``
    (or an abort, once the head is out).
    """


class WebSocketHandshakeError(SwooleError):
    """Raised by a WebSocket protocol's ``handshake`` hook to refuse the handshake: the
    client gets ``status`` (default 403) and the message as the body."""

    def __init__(self, message: str = "handshake refused", status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class WebSocketClosedError(SwooleError, ConnectionError):
    """The WebSocket connection is closed: ``code`` and ``reason`` are its close code and
    reason (1006 when it ended without a close handshake)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with {code}" + (f" ({reason})" if reason else ""))
        self.code, self.reason = code, reason


class RedisError(SwooleError):
    """Base of every Redis client error (:mod:`tx_swoole.clients.redis`)."""


class RedisConnectionError(RedisError, ConnectionError):
    """The connection was refused, failed or closed; the message has host:port.

    Commands pending on a connection that is lost fail with this error.  The command may or may
    not have run on the server; retry only idempotent commands.
    """


class RedisTimeoutError(RedisError, TimeoutError):
    """A connect or command did not complete within its timeout.

    A command that times out aborts its connection so that no later reply reaches the wrong
    caller; the other commands pending on that connection fail with
    :class:`RedisConnectionError`.
    """


class RedisReplyError(RedisError):
    """The server answered with an error reply (``-ERR ...``); the connection stays usable."""


class RedisProtocolError(RedisError):
    """The server sent bytes that are not RESP; the connection is closed."""


class RedisPoolClosedError(RedisError):
    """The pool was closed with ``close()``; create a new pool."""


class RedisAcquireTimeoutError(RedisTimeoutError):
    """No connection became free within ``acquire_timeout``; raise the pool ``size``."""


class RedisWrongProcessError(RedisError):
    """A pool is used in a process other than the one that created it.

    Connections cannot be shared across processes: create clients in the ``worker_start`` hook
    of each worker.
    """


class WatchError(RedisError):
    """A ``WATCH``ed key changed before ``EXEC``; the transaction did not run."""


class RedisClusterError(RedisError):
    """Redis Cluster: no node answered for the topology, a slot has no reachable primary within
    ``failover_timeout``, or a command was redirected more than ``max_redirects`` times."""


class RedisCrossSlotError(RedisClusterError, ValueError):
    """A command's keys hash to different cluster slots; refused before anything is sent.

    Put keys used together in one slot with a hash tag: ``{user1}:a`` and ``{user1}:b``.
    """


class TCPClientError(SwooleError):
    """Base of the errors of :class:`~tx_swoole.clients.tcp.TCPClient`; messages name
    host:port."""


class TCPConnectError(TCPClientError, ConnectionError):
    """A connect was refused ("nothing listens on HOST:PORT"), timed out or failed."""


class TCPClosedError(TCPClientError, ConnectionError):
    """The connection was closed by the peer, lost, or closed by the client.

    What was sent may or may not have been processed; resend only what is idempotent.
    """


class TCPTimeoutError(TCPClientError, TimeoutError):
    """No message arrived within the read timeout."""


class TCPBusyError(TCPClientError):
    """A second ``recv()`` while one waits (Swoole's "socket already bound to another
    coroutine"), or ``recv()``/``request()`` on a client whose messages go to
    ``messageReceived``."""


class TCPMessageTooLargeError(TCPClientError):
    """A message over ``package_max_length``; the connection is closed."""


class TCPWrongProcessError(TCPClientError):
    """A client used in a process other than the one that created it (after ``fork``)."""


class MySQLError(SwooleError):
    """Base of every MySQL client error (:mod:`tx_swoole.clients.mysql`)."""


class MySQLConnectionError(MySQLError, ConnectionError):
    """The connection was refused, failed, was lost or closed; the message has host:port.

    A statement in progress on a lost connection may or may not have run; a transaction in
    progress was rolled back by the server.
    """


class MySQLTimeoutError(MySQLError, TimeoutError):
    """A connect or statement did not complete within its timeout.

    A statement past its timeout is killed (``KILL QUERY`` from another connection) and its
    answer dropped, or its connection closed: the next caller gets its own result.
    """


class MySQLServerError(MySQLError):
    """The server answered with an error: ``errno`` (MySQL error code) and ``sqlstate``.

    The connection stays usable.
    """

    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(f"({errno}, {sqlstate}) {message}")
        self.errno, self.sqlstate, self.message = errno, sqlstate, message

    def __reduce__(self) -> Any:
        return (type(self), (self.errno, self.sqlstate, self.message))


class MySQLProtocolError(MySQLError):
    """The server sent what the protocol does not allow, or asked for what this client does
    not do; the connection is closed."""


class MySQLPoolClosedError(MySQLError):
    """The pool was closed with ``close()``; create a new pool."""


class MySQLAcquireTimeoutError(MySQLTimeoutError):
    """No connection became free within ``acquire_timeout``; raise the pool ``size``."""


class MySQLWrongProcessError(MySQLError):
    """A pool used in a process other than the one that created it (after ``fork``): create
    clients in the ``worker_start`` hook of each worker."""


class TaskError(SwooleError):
    """Base of the errors of ``server.task()`` (task workers, ``task_worker_num``)."""


class TaskFailedError(TaskError):
    """The task handler raised: ``type`` is its exception's class name (module-qualified),
    ``message`` its message; the traceback is in the task worker's log."""

    def __init__(self, task_id: int, type_name: str, message: str) -> None:
        super().__init__(f"task {task_id} raised {type_name}: {message}")
        self.taskId, self.type, self.message = task_id, type_name, message


class TaskTimeoutError(TaskError, TimeoutError):
    """No result within the ``timeout`` given to ``server.task()``.  The task may still run
    (a task worker is not interrupted); its late result is dropped."""


class TaskWorkerDiedError(TaskError, ConnectionError):
    """The task worker holding the task died (it is respawned); the task may or may not have
    run.  Later tasks go to the living task workers and the replacement."""


class TaskQueueFullError(TaskError):
    """This worker already waits on ``task_queue_max`` tasks; raise the setting, add task
    workers (``task_worker_num``), or send fewer tasks at once."""


class TaskSerializationError(TaskError, ValueError):
    """A task's data or result cannot cross processes: pickle refused it (the message says
    why), or it pickles to more than ``package_max_length`` bytes."""


class NoTaskWorkersError(TaskError):
    """``server.task()`` with ``task_worker_num = 0``, in the in-process server
    (``worker_num = 0``), or with a ``dstWorkerId`` that names no task worker."""
