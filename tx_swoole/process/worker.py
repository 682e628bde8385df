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

import gc
import json
import os
import random
import signal
import sys
import time
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.config import ServerConfig, parse_config, resolve
from tx_swoole.errors import NoTaskWorkersError
from tx_swoole.process._control import LineDecoder, encode
from tx_swoole.process._lifecycle import (
    BOOT_ERROR_EXIT,
    REOPEN_LOGS,
    BootingService,
    call_hook,
)
from tx_swoole.process.handoff import HandOff
from tx_swoole.process.listening import Listening, make_factory
from tx_swoole.process.messages import Peers
from tx_swoole.process.tasks import TaskDispatcher
from tx_swoole.process.watchdog import Watchdog
from tx_swoole.protocols.tcp import CONNECTION_DONE, ConnectionTable
from tx_swoole.reactor import IServerReactor, default_reactor, install_unless_chosen
from tx_swoole.tls import tls_enabled

__all__ = ["AppService", "make_factory"]
log = SwooleLogger("tx_swoole.worker")
EXIT_POLL = 0.1  # seconds between worker_exit calls while draining
ABORT_WAIT = 1.0  # seconds aborted connections get to report connectionClosed


class AppService(BootingService):
    """Serves the configured apps on the ports it binds or the listening sockets it adopts
    (``listen_fds``: the master's, one per listener).

    ``server`` handed to the event hooks is this service: ``server.factory`` is the
    ``[server]`` listener's connection table (``server.tables`` every listener's),
    ``server.workerId`` the worker id, ``server.settings`` the settings.

    Resource handling: owns the listening ports (closed on stop) and the connections (drained
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
        listen_fds: list[int] | None = None,
        reactor: IServerReactor | None = None,
        generation: int = 1,
        peer_path: str = "",
    ) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.config = config
        self.generation = generation
        # the other processes (a worker of a master only): met as the master announces them,
        # before this one's boot too; it listens for them once booted
        self.peers = Peers(config.settings, "worker", worker_id, reactor, server=self) if (
            peer_path
        ) else None  # fmt: skip
        self._peerPath = peer_path
        self.settings = config.settings
        self.workerId = worker_id
        self.reactor = reactor
        self.factory: ConnectionTable | None = None  # [server]'s (or the first listener's)
        self.port: Any = None  # [server]'s
        self.listening: list[Listening] = []
        self.ready: defer.Deferred[None] = defer.succeed(None)
        self._listenFds = listen_fds
        self._hooks: dict[str, Any] = {}
        self._stopping: defer.Deferred[None] | None = None
        self.startTime = 0.0  # when it began serving (time.time())
        self.watchdog: Watchdog | None = None
        self.tasks: TaskDispatcher | None = None
        if self.settings.task_worker_num:
            self.tasks = TaskDispatcher(self.settings, worker_id, reactor, server=self)

    taskworker = False  # (Swoole's $server->taskworker: True in a task worker)

    @property
    def tables(self) -> list[ConnectionTable]:
        """Every listener's connection table (UDP listeners have none)."""
        return [x.table for x in self.listening if x.table is not None]

    @property
    def requests(self) -> int:
        """Requests (HTTP), messages (TCP, WebSocket) and datagrams (UDP) handled so far by
        this worker, over every listener."""
        return sum(x.requests for x in self.listening)

    @property
    def connectionCount(self) -> int:
        return sum(len(t.connections) for t in self.tables)

    def stats(self) -> dict[str, Any]:
        """This worker's figures, with Swoole's ``$server->stats()`` keys where they apply
        (``python -m tx_swoole status`` has the sums over every worker)."""
        accepted = sum(t.acceptCount for t in self.tables)
        connections = self.connectionCount
        requests = self.requests
        figures = {
            "start_time": int(self.startTime), "worker_id": self.workerId,
            "worker_num": self.settings.worker_num,
            "task_worker_num": self.settings.task_worker_num,
            "connection_num": connections, "accept_count": accepted,
            "close_count": accepted - connections, "request_count": requests,
            "worker_request_count": requests, "tasking_num": 0, "task_queue_num": 0,
            "task_count": 0,
            "reactor_stall_count": self.watchdog.stalls if self.watchdog is not None else 0,
        }  # fmt: skip
        if self.tasks is not None:
            figures.update(self.tasks.stats())
        return figures

    def setRecycleCheck(self, check: Any) -> None:
        """Call ``check`` after each request (``max_request``), on every listener."""
        for x in self.listening:
            (x.table if x.table is not None else x.datagrams).maxRequestReached = check

    # -- task workers -----------------------------------------------------------------------
    def task(self, data: Any, dstWorkerId: int = -1, timeout: float | None = None) -> Any:  # noqa: N803
        """Run ``data`` through ``[events] task`` in a task worker: a Deferred (awaitable) of
        the handler's result; ``dstWorkerId`` picks the task worker (0..task_worker_num-1,
        -1: the least busy); ``timeout`` in seconds.  Errors: :mod:`tx_swoole.process.tasks`."""
        if self.tasks is None:
            return defer.fail(NoTaskWorkersError(
                "task() needs task workers: set task_worker_num (and [events] task)"
            ))  # fmt: skip
        return self.tasks.task(data, dstWorkerId, timeout)

    def taskWorkerReady(self, index: int, path: str, pid: int) -> None:
        if self.tasks is not None:
            self.tasks.taskWorkerReady(index, path, pid)

    def peerReady(self, kind: str, index: int, path: str, pid: int) -> None:
        if self.peers is not None:
            self.peers.peerReady(kind, index, path, pid)

    def sendMessage(self, data: Any, dstWorkerId: int) -> bool:  # noqa: N803
        """Swoole's ``sendMessage``: ``data`` (anything pickle takes) to the ``[events]
        pipe_message`` hook of worker ``dstWorkerId`` (task workers from ``worker_num`` on);
        False (logged) if there is no such process."""
        if self.peers is None:
            log.notice("sendMessage dropped: there are no other workers (worker_num = 0)")
            return False
        return self.peers.sendMessage(data, dstWorkerId)

    async def _boot(self) -> None:
        base = self.config.base_dir
        self._hooks = {name: resolve(ref, base) for name, ref in self.config.events.items()}
        if self.tasks is not None:
            self.tasks.finish = self._hooks.get("finish")
        listeners = self.config.listeners
        fds = self._listenFds
        for i, x in enumerate(listeners):
            listening = Listening(x, fds[i] if fds is not None else None, self.reactor, self)
            if x.app:
                app = resolve(x.app, base)
            else:  # a websocket server of functions (Swoole's on("message", ...))
                from tx_swoole.protocols.websocket import protocol_of_functions

                app = protocol_of_functions(self._hooks)
            listening.build(app, resolve(x.http_app, base) if x.http_app else None)
            table = listening.table
            if table is not None:  # ids unique across the listeners and the workers
                table.numberIds(self.workerId, self.settings.worker_num, self.generation,
                                i, len(listeners))  # fmt: skip
                if self.factory is None:
                    self.factory = table
            self.listening.append(listening)
        for table in self.tables:
            table.siblings = [t for t in self.tables if t is not table]
        if self.peers is not None:  # a worker of a master
            self.peers.pipeMessage = self._hooks.get("pipe_message")
            self.peers.listen(self._peerPath)
            for listening in self.listening:
                if listening.listener.type in ("tcp", "websocket"):
                    self.peers.share(listening.table)
            self.peers.handoff = HandOff(self.peers, self.tables, self.reactor)
        for listening in self.listening:
            listening.listen()
            x = listening.listener
            log.info(
                "worker {workerId} (pid {pid}) serving {type} app {app} on {where}{tls}",
                workerId=self.workerId, pid=os.getpid(), type=x.type,
                app=x.app or self.config.events.get("message"), where=listening.where,
                tls=" (TLS)" if x.type != "udp" and tls_enabled(x.settings) else "",
            )  # fmt: skip
        self.port = self.listening[0].port
        if "worker_start" in self._hooks:
            await call_hook(self._hooks["worker_start"], self, self.workerId)
        self.startTime = time.time()
        timeout = self.settings.reactor_stall_timeout
        if timeout:
            self.watchdog = Watchdog(self.reactor, timeout, f"worker {self.workerId}")
            self.watchdog.start()
        # Everything loaded so far lives as long as the worker: keep it out of the garbage
        # collector's full passes, which otherwise rescan it on the hot path.
        gc.freeze()

    def stopService(self) -> defer.Deferred[None]:
        """Graceful shutdown of the owner of the socket: see :meth:`drain`."""
        super().stopService()
        return self.drain(final=True)

    def drain(self, final: bool) -> defer.Deferred[None]:
        """Stop accepting, finish what was received, close, call the hooks; fires when done.

        ``final`` (shutdown): connections already queued on the listening socket are accepted
        and answered first, and when this process owns the socket no new handshake completes
        from then on, so no client finds its connection reset.  Otherwise (reload, recycle)
        other workers keep accepting.
        """
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._drain(final))
        return self._stopping

    async def _drain(self, final: bool) -> None:
        reason = "server" if final else "reload"
        for listening in self.listening:
            await listening.stop(final)
        tables = self.tables
        for table in tables:
            table.startDraining()
        if not final and self.peers is not None and self.peers.handoff is not None:
            await self.peers.handoff.run(self.settings.max_wait_time / 2)
        udp = [x.datagrams for x in self.listening if x.datagrams is not None]
        done = defer.gatherResults([*(t.whenEmpty() for t in tables),
                                    *(u.whenIdle() for u in udp)])  # fmt: skip
        deadline = self.reactor.seconds() + self.settings.max_wait_time
        while True:  # at least once, as Swoole calls onWorkerExit on every loop while exiting
            await self._callHook("worker_exit")
            for table in tables:
                table.goAway(final)  # then long connections are asked to go (WebSocket: 1001)
            if done.called or self.reactor.seconds() >= deadline:
                break
            await task.deferLater(self.reactor, EXIT_POLL, lambda: None)
        for u in udp:
            if u.running:
                log.warn("worker {workerId} (pid {pid}): {count} datagram handlers still ran "
                         "after max_wait_time={wait}s; cancelling them",
                         workerId=self.workerId, pid=os.getpid(), count=len(u.running),
                         wait=self.settings.max_wait_time)  # fmt: skip
        for listening in self.listening:
            await listening.close()
        for factory in tables:
            if factory.connections:
                log.warn(
                    "worker {workerId} (pid {pid}) still had {count} connections open after "
                    "max_wait_time={wait}s: {open}; aborting them",
                    workerId=self.workerId, pid=os.getpid(), count=len(factory.connections),
                    wait=self.settings.max_wait_time, open=describe_open(factory),
                )  # fmt: skip
                factory.closeAll(reason)
                # An abort reports connectionLost on the next reactor turn: wait for every
                # connection's connectionClosed before worker_stop (bounded).
                gone = factory.whenEmpty()
                gone.addTimeout(ABORT_WAIT, self.reactor)
                try:
                    await gone
                except defer.TimeoutError:
                    log.warn(
                        "worker {workerId}: {count} aborted connections did not report closed "
                        "within {wait}s", workerId=self.workerId,
                        count=len(factory.connections), wait=ABORT_WAIT,
                    )  # fmt: skip
        await self._callHook("worker_stop")
        if self.tasks is not None:
            self.tasks.close()
        if self.peers is not None:
            self.peers.close()
        if self.watchdog is not None:
            self.watchdog.stop()

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
        state = p.describeState()
        items.append(f"#{connId} {getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')} {state}")
    more = len(factory.connections) - len(items)
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")


# -- worker process entry point ----------------------------------------------------------------
# ``python -m tx_swoole.process.worker WORKER_ID GENERATION REACTOR KIND PEERS [TASKS]`` is
# spawned by the master (REACTOR: its twistd --reactor choice, empty for SwooleReactor; KIND:
# worker, task or process (a [[process]] table, WORKER_ID its index); PEERS: the Unix socket
# it listens on for the other processes; TASKS: a task worker's socket for the workers'
# tasks) with the config as JSON on fd 5 (read to its end, so it is not on the command line),
# the listening sockets on fd 3, 6, 7, ... (workers: one per listener, see listen_fd),
# master → worker control messages on fd 0 (stdin, whose EOF means the master died) and
# worker → master messages on fd 4.  Logs go to stderr as JSON events, which the master
# re-emits tagged with the worker id and pid.  The process title says what it is:
# ``tx_swoole: worker #0 (server.toml)``.
LISTEN_FD = 3
CONTROL_OUT_FD = 4
CONFIG_FD = 5


def listen_fd(index: int) -> int:
    """The descriptor of listener ``index``'s socket in a worker: 3 for ``[server]``, then
    6, 7, ... for the ``[[listen]]`` tables."""
    return LISTEN_FD if index == 0 else CONFIG_FD + index


def set_title(what: str, config_path: str = "") -> None:
    """The process title ``ps`` shows: ``tx_swoole: WHAT (config file name)``."""
    import setproctitle

    name = os.path.basename(config_path)
    setproctitle.setproctitle(f"tx_swoole: {what}" + (f" ({name})" if name else ""))


STATS_INTERVAL = 1.0


class ControlChannel(Protocol):
    """The worker's side of the control channel (stdin in, fd 4 out)."""

    def __init__(self, worker: WorkerRuntime) -> None:
        self.worker = worker
        self.decoder = LineDecoder()

    def dataReceived(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            if message["type"] == "drain":
                self.worker.drain(final=bool(message.get("final")))
            elif message["type"] == "task_worker":  # where a task worker listens, from now on
                ready = getattr(self.worker.service, "taskWorkerReady", None)
                if ready is not None:
                    ready(int(message["index"]), str(message["path"]), int(message["pid"]))
            elif message["type"] == "peer":  # where another process listens for messages
                self.worker.service.peerReady(
                    str(message["kind"]),
                    int(message["index"]),
                    str(message["path"]),
                    int(message["pid"]),
                )

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        if not self.worker.draining:
            log.warn("worker {id} (pid {pid}): master is gone; draining and exiting",
                     id=self.worker.service.workerId, pid=os.getpid())  # fmt: skip
            self.worker.drain(final=True)

    def send(self, kind: str, **fields: Any) -> None:
        if self.transport is not None:
            self.transport.write(encode(kind, **fields))


class WorkerRuntime:
    """Runs an :class:`AppService` in a worker process (or, given ``service``, a task
    worker's service) and talks to the master."""

    def __init__(
        self,
        config: ServerConfig,
        worker_id: int,
        generation: int,
        reactor: IServerReactor,
        service: Any = None,
        peer_path: str = "",
    ) -> None:
        self.reactor = reactor
        self.generation = generation
        if service is None:
            fds = [listen_fd(i) for i in range(len(config.listeners))]
            service = AppService(config, worker_id=worker_id, listen_fds=fds,
                                 reactor=reactor, generation=generation,
                                 peer_path=peer_path)  # fmt: skip
            limit = config.settings.max_request
        elif getattr(service, "taskworker", False):
            limit = config.settings.task_max_request
        else:  # a [[process]]: no recycling
            limit = 0
        self.service: Any = service
        self.control = ControlChannel(self)
        self.draining = False
        self.exitCode = 0
        self._stats = task.LoopingCall(self.sendStats)
        self._stats.clock = reactor
        self._recycleAt = max_request_limit(config.settings, worker_id, limit)

    def start(self) -> None:
        from twisted.internet._posixstdio import StandardIO

        StandardIO(self.control, stdin=0, stdout=CONTROL_OUT_FD, reactor=self.reactor)
        self.service.startService()
        self.service.ready.addCallbacks(self._ready, self._bootFailed)
        finished = getattr(self.service, "finished", None)  # a [[process]] that ended
        if finished is not None:
            finished.addCallback(self._finished)

    def _finished(self, code: int) -> None:
        self.exitCode = code
        self.drain(final=True)

    def _ready(self, _: Any) -> None:
        if self._recycleAt:
            self.service.setRecycleCheck(self._checkRecycle)
        peers = self.service.peers
        self.control.send("ready", pid=os.getpid(), generation=self.generation,
                          path=getattr(self.service, "path", ""),
                          peer=peers.path if peers is not None else "")  # fmt: skip
        self._stats.start(STATS_INTERVAL, now=True)

    def _bootFailed(self, failure: Failure) -> None:
        log.failure("worker {id} (pid {pid}) failed to boot: {error}", failure,
                    id=self.service.workerId, pid=os.getpid(),
                    error=failure.getErrorMessage())  # fmt: skip
        self.control.send("boot_failed", pid=os.getpid(), error=failure.getErrorMessage())
        self.exitCode = BOOT_ERROR_EXIT
        self.draining = True
        self.reactor.callLater(0, self.stop)

    def stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def _checkRecycle(self) -> None:
        if self._recycleAt and self.service.requests >= self._recycleAt:
            self._recycleAt = 0
            log.info("worker {id} (pid {pid}) served {n} requests (max_request): asking for "
                     "a replacement", id=self.service.workerId, pid=os.getpid(),
                     n=self.service.requests)  # fmt: skip
            self.control.send("recycle", pid=os.getpid())

    def sendStats(self) -> None:
        self.control.send(
            "stats", pid=os.getpid(), connections=self.service.connectionCount,
            requests=self.service.requests, stats=self.service.stats(),
        )  # fmt: skip

    def drain(self, final: bool) -> None:
        if self.draining:
            return
        self.draining = True
        d = self.service.drain(final=final)
        d.addErrback(lambda f: log.failure("drain failed", f))
        d.addBoth(lambda _: self.stop())


def max_request_limit(settings: Any, worker_id: int, limit: int | None = None) -> int:
    """``max_request`` (or ``limit``: ``task_max_request`` for a task worker) plus Swoole's
    jitter (0..max_request_grace, or half the limit over 10), or 0 for never."""
    limit = settings.max_request if limit is None else limit
    if not limit:
        return 0
    if limit == settings.max_request:
        grace = settings.request_grace
    else:
        grace = limit // 2 if limit > 10 else 0
    jitter = random.Random(os.getpid() ^ worker_id).randint(0, grace) if grace else 0
    return int(limit + jitter)


def _worker_logging(level: str) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        jsonFileLogObserver,
    )

    twisted_level = {
        "debug": LogLevel.debug, "trace": LogLevel.debug, "info": LogLevel.info,
        "notice": LogLevel.info, "warning": LogLevel.warn, "error": LogLevel.error,
    }[level]  # fmt: skip
    observer = FilteringLogObserver(
        jsonFileLogObserver(sys.stderr, recordSeparator=""),
        [LogLevelFilterPredicate(defaultLogLevel=twisted_level)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: list[str] | None = None) -> int:
    """Worker process entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    worker_id, generation = int(argv[0]), int(argv[1])
    reactor_name = argv[2] if len(argv) > 2 else ""
    kind = argv[3] if len(argv) > 3 else "worker"
    peer_path = argv[4] if len(argv) > 4 else ""
    with os.fdopen(CONFIG_FD, "rb") as f:  # the master writes it, then closes its end
        raw = json.loads(f.read())
    config = parse_config(
        {k: raw[k] for k in ("server", "settings", "events", "listen", "process") if raw.get(k)},
        raw["base_dir"],
        raw["path"],
    )
    if kind == "process":
        name = f"process {config.processes[worker_id].name}"
    else:
        name = f"task worker #{worker_id}" if kind == "task" else f"worker #{worker_id}"
    set_title(name, config.path)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group: the master decides
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(REOPEN_LOGS, signal.SIG_IGN)  # our lines go through the master's log
    _worker_logging(config.settings.log_level)
    if reactor_name:  # the master's twistd --reactor choice
        from twisted.application.reactors import installReactor

        reactor = cast(IServerReactor, installReactor(reactor_name))
    else:
        reactor = install_unless_chosen()
    service: Any = None
    if kind == "process":  # a [[process]]: worker_id is its index
        from tx_swoole.process.user_process import UserProcessService

        service = UserProcessService(config, index=worker_id, reactor=reactor,
                                     peer_path=peer_path)  # fmt: skip
    elif kind == "task":  # a task worker: worker_id is its index, argv[5] its tasks' socket
        from tx_swoole.process.task_worker import TaskWorkerService

        service = TaskWorkerService(config, index=worker_id, path=argv[5], reactor=reactor,
                                    peer_path=peer_path)  # fmt: skip
    runtime = WorkerRuntime(config, worker_id, generation, reactor, service, peer_path)
    reactor.callWhenRunning(runtime.start)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(runtime.drain, True))
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]  # every posix reactor's
    return runtime.exitCode


if __name__ == "__main__":
    sys.exit(main())
