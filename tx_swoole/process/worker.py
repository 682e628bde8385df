"""The app service: listen (or adopt a socket), import the app, serve, drain.

:class:`AppService` is what a worker process runs, and what ``twistd swoole`` runs in its own
process when ``worker_num = 0``.  It imports the app only in ``startService`` (so a reload runs
the code on disk now), calls the ``worker_start`` hook, and on ``stopService`` drains: it stops
accepting, lets in-flight requests finish (HTTP sends ``Connection: close``, idle keep-alive
connections close at once), calls ``worker_exit`` repeatedly until no connection is left, then
``worker_stop`` once.  Connections still open after ``max_wait_time`` are aborted with a
WARNING that says what was still open.
"""

from __future__ import annotations

import inspect
import os
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task

from tx_swoole._log import SwooleLogger, set_log_level
from tx_swoole.config import ServerConfig, resolve
from tx_swoole.protocols.tcp import ConnectionTable, TrackedProtocol
from tx_swoole.transport import adopt_stream_port, listen_tcp

log = SwooleLogger("tx_swoole.worker")
EXIT_POLL = 0.1  # seconds between worker_exit calls while draining


def make_factory(config: ServerConfig, app: Any, *, reactor: Any = None) -> ConnectionTable:
    """The server factory for ``config.type`` serving ``app``."""
    if config.type == "tcp":
        if not (isinstance(app, type) and issubclass(app, TrackedProtocol)):
            raise TypeError(
                f"[server] app = {config.app!r} must be a subclass of "
                "tx_swoole.protocols.tcp.TCPProtocol for type = 'tcp'"
            )
        return ConnectionTable(app, config.settings, reactor=reactor)
    from tx_swoole.protocols.http import HTTPFactory

    if not callable(app):
        raise TypeError(f"[server] app = {config.app!r} must be callable(request, response)")
    factory: ConnectionTable = HTTPFactory(app, config.settings, reactor=reactor)
    return factory


async def call_hook(hook: Any, *args: Any) -> None:
    """Call an event hook, awaiting it if it returns an awaitable or a Deferred."""
    result = hook(*args)
    if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
        await result


class AppService(Service):
    """Serves the configured app on a port it binds or a listening socket it adopts.

    ``server`` handed to the event hooks is this service: ``server.factory`` is the connection
    table, ``server.workerId`` the worker id, ``server.settings`` the settings.

    Resource handling: owns the listening port (closed on stop) and the connections (drained
    on stop, aborted after ``max_wait_time``).

    Error handling: an app that cannot be imported, or a ``worker_start`` hook that fails, makes
    ``startService`` fail with the error; the caller decides (twistd logs it, a worker exits
    with a boot-failure code).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        worker_id: int = 0,
        listen_fd: int | None = None,
        max_accepts: int = 0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.settings = config.settings
        self.workerId = worker_id
        self.reactor = reactor
        self.factory: ConnectionTable | None = None
        self.port: Any = None
        self.ready: defer.Deferred[None] = defer.succeed(None)
        self._listenFd = listen_fd
        self._maxAccepts = max_accepts
        self._hooks: dict[str, Any] = {}
        self._stopping: defer.Deferred[None] | None = None

    @property
    def requests(self) -> int:
        """Requests (HTTP) or messages handled so far by this worker."""
        return int(getattr(self.factory, "requestCount", 0))

    def startService(self) -> None:
        """Boot in the background; ``self.ready`` fires when serving, or fails with the error."""
        super().startService()
        set_log_level(self.settings.log_level)
        self.ready = defer.ensureDeferred(self._boot())

    async def _boot(self) -> None:
        base = self.config.base_dir
        self._hooks = {name: resolve(ref, base) for name, ref in self.config.events.items()}
        app = resolve(self.config.app, base)
        self.factory = make_factory(self.config, app, reactor=self.reactor)
        if self._listenFd is None:
            self.port = listen_tcp(
                self.config.port, self.factory, self.settings.backlog, self.config.host,
                reactor=self.reactor,
            )  # fmt: skip
        else:
            family = socket.socket(fileno=os.dup(self._listenFd)).family
            self.port = adopt_stream_port(
                self._listenFd, self.factory, family,
                max_accepts=self._maxAccepts, reactor=self.reactor,
            )  # fmt: skip
        addr = self.port.getHost()
        log.info(
            "worker {workerId} (pid {pid}) serving {type} app {app} on {host}:{port}",
            workerId=self.workerId, pid=os.getpid(), type=self.config.type, app=self.config.app,
            host=addr.host, port=addr.port,
        )  # fmt: skip
        if "worker_start" in self._hooks:
            await call_hook(self._hooks["worker_start"], self, self.workerId)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._drain())
        return self._stopping

    async def _drain(self, reason: str = "server") -> None:
        if self.port is not None:
            await self.port.stopListening()
        factory = self.factory
        if factory is not None:
            factory.startDraining()
            empty = factory.whenEmpty()
            deadline = self.reactor.seconds() + self.settings.max_wait_time
            while not empty.called and self.reactor.seconds() < deadline:
                await self._callHook("worker_exit")
                if empty.called:
                    break
                await task.deferLater(self.reactor, EXIT_POLL, lambda: None)
            if factory.connections:
                log.warn(
                    "worker {workerId} (pid {pid}) still had {count} connections open after "
                    "max_wait_time={wait}s: {open}; aborting them",
                    workerId=self.workerId, pid=os.getpid(), count=len(factory.connections),
                    wait=self.settings.max_wait_time, open=describe_open(factory),
                )  # fmt: skip
                factory.closeAll("reload" if reason == "reload" else "server")
        await self._callHook("worker_stop")

    async def _callHook(self, name: str) -> None:
        hook = self._hooks.get(name)
        if hook is None:
            return
        try:
            await call_hook(hook, self, self.workerId)
        except Exception:
            log.failure("{name} hook of worker {id} failed", name=name, id=self.workerId)


def describe_open(factory: ConnectionTable, most: int = 5) -> str:
    """A short account of the open connections (ids and peers), for deadline warnings."""
    items = []
    for connId, p in list(factory.connections.items())[:most]:
        peer = p.transport.getPeer()
        state = getattr(p, "describeState", lambda: "open")()
        items.append(f"#{connId} {getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')} {state}")
    more = len(factory.connections) - len(items)
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")
