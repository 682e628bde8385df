"""The master process: owns the listening socket, supervises the workers, reloads them.

:class:`MasterService` binds and listens itself, then spawns ``worker_num`` fresh worker
interpreters with ``reactor.spawnProcess`` (never ``fork``), passing the listening socket and
a control channel (see :mod:`tx_swoole.process.worker`).

- **Reload** (``SIGUSR1``, ``python -m tx_swoole reload``, or a worker reaching
  ``max_request``): for each worker id, the replacement is started first; only once it reports
  ready is the old worker told to drain.  A replacement that cannot boot leaves the old worker
  serving.  A reload requested while one runs is queued (one at most) and starts when it
  finishes, so code deployed meanwhile is loaded too; further requests are ignored, logged.
- **Crash**: a worker that dies after it was ready is respawned at once with its id.  When the
  app cannot boot at start-up the master exits with code 3 (like gunicorn); later, a worker
  that fails to boot is retried with backoff (1, 2, 4, 8 s), then given up with an ERROR.
- **Shutdown** (``SIGTERM``/``SIGINT``): no new handshake completes on the socket, workers
  accept what is queued, finish, and exit; stragglers are killed after ``max_wait_time``.
- Worker log events reach the master's log tagged ``[worker ID pid PID]``.
- With a pid file, ``PIDFILE.status.json`` holds the workers' ids, pids, generations, ages,
  connections and requests, for ``python -m tx_swoole status``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger, set_log_level
from tx_swoole.config import Listener, ServerConfig
from tx_swoole.process._control import LineDecoder, encode
from tx_swoole.process._lifecycle import (
    BOOT_ERROR_EXIT,
    call_at_start,
    install_signals,
    shutdown_handlers,
    write_status,
)
from tx_swoole.process.watcher import CodeWatcher, watch_targets
from tx_swoole.process.worker import ABORT_WAIT, CONFIG_FD, CONTROL_OUT_FD, listen_fd, set_title
from tx_swoole.reactor import IServerReactor, default_reactor
from tx_swoole.transport import refuse_new_connections, unix_listening_socket

log = SwooleLogger("tx_swoole.master")
BOOT_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds before each retry of a worker that cannot boot
# Seconds past max_wait_time before a draining worker is SIGKILLed: the worker's own steps
# after its deadline (aborted connections report connectionClosed within ABORT_WAIT, then
# worker_stop and its exit), with a margin for a loaded machine.  Shorter, the kill could come
# first and skip them.
KILL_GRACE = ABORT_WAIT + 1.0
STATUS_EVERY = 0.5  # seconds between status file writes
# A [[process]] that exits is started again after PROCESS_BACKOFF seconds, doubled for each
# exit in a row up to PROCESS_BACKOFF_MAX; one that ran PROCESS_STABLE seconds starts over.
PROCESS_BACKOFF, PROCESS_BACKOFF_MAX, PROCESS_STABLE = 0.5, 30.0, 30.0
# The server-wide sums in the status: of the workers' stats, and of the task workers'.
_WORKER_SUMS = ("connection_num", "accept_count", "close_count", "request_count",
                "reactor_stall_count")  # fmt: skip
_TASK_SUMS = ("tasking_num", "task_queue_num", "task_count")


@dataclass(eq=False)
class Worker:
    """One worker process as the master sees it."""

    id: int
    generation: int
    started: float
    pid: int = 0
    state: str = "booting"  # booting, ready, draining, exited
    kind: str = "worker"  # "task" (a task worker: id is its index, 0..task_worker_num-1), or
    # "process" (a [[process]] table: id is its index)
    name: str = ""  # a [[process]]'s
    path: str = ""  # a task worker's socket
    peerPath: str = ""  # where it listens for the other processes  # noqa: N815
    stats: dict[str, Any] = field(default_factory=dict)  # its last server.stats()
    connections: int = 0
    requests: int = 0
    process: Any = None
    ready: defer.Deferred[None] = field(default_factory=defer.Deferred)
    exited: defer.Deferred[int] = field(default_factory=defer.Deferred)
    killCall: Any = None

    @property
    def label(self) -> str:
        """``worker 0``, ``task worker #0``, ``process NAME``."""
        if self.kind == "process":
            return f"process {self.name}"
        return f"task worker #{self.id}" if self.kind == "task" else f"worker {self.id}"

    def describe(self) -> str:
        return f"{self.label} (pid {self.pid}, generation {self.generation})"


class WorkerProcess(ProcessProtocol):
    """The master's side of one worker: control messages, log lines, exit."""

    def __init__(self, master: MasterService, worker: Worker) -> None:
        self.master = master
        self.worker = worker
        self.decoder = LineDecoder()
        self.logBuffers: dict[int, bytes] = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        self.worker.pid = self.transport.pid if self.transport is not None else 0

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == CONTROL_OUT_FD:
            for message in self.decoder.feed(data):
                self.master.workerMessage(self.worker, message)
            return
        *lines, self.logBuffers[childFD] = (self.logBuffers.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self.master.workerLog(self.worker, line)

    def processEnded(self, reason: Failure) -> None:
        for rest in self.logBuffers.values():
            if rest:
                self.master.workerLog(self.worker, rest)
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.master.workerEnded(self.worker, code if code is not None else -(sig or 1))


class MasterService(Service):
    """Supervises ``worker_num`` worker processes sharing one listening socket.

    ``spawn`` replaces ``reactor.spawnProcess`` (tests pass a fake); ``sockets`` already
    listening sockets for ``[server]``, one per worker id (see :func:`listening_sockets`).
    ``listenerSockets`` has every listener's (the ``[[listen]]`` tables after ``[server]``):
    a TCP or UDP listener has one SO_REUSEPORT socket per worker id, a Unix one a single
    socket every worker accepts from.

    Resource handling: owns the listening sockets (closed once every worker has exited), the
    worker processes (killed after ``max_wait_time`` when they will not drain) and the status
    file (removed on shutdown).

    Error handling: worker crashes and boot failures are logged and handled as the module
    docstring says; they never stop the master unless no worker can ever boot.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        pidfile: str | None = None,
        reactor: IServerReactor | None = None,
        spawn: Callable[..., IProcessTransport] | None = None,
        sockets: list[socket.socket] | None = None,
        executable: str = sys.executable,
        reactor_name: str | None = None,
    ) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.config = config
        self.settings = config.settings
        self.reactor = reactor
        self.spawn = spawn or reactor.spawnProcess
        self.executable = executable
        self.reactorName = reactor_name  # twistd --reactor: workers use it too
        self.sockets = sockets or []  # [server]'s, when the caller bound them
        self.listenerSockets: list[list[socket.socket]] = []
        self.statusPath = os.path.abspath(pidfile) + ".status.json" if pidfile else None
        self.generation = 1
        self.workers: dict[int, Worker] = {}
        self.taskWorkers: dict[int, Worker] = {}
        self.processes: dict[int, Worker] = {}  # the [[process]] tables'
        self.processFailures: dict[int, int] = {}  # exits in a row of a short-lived one
        self.retiring: list[Worker] = []
        self.live: list[Worker] = []  # every process spawned and not yet exited
        self.bootFailures: dict[tuple[str, int], int] = {}
        self.runDir = ""  # private directory of the task workers' sockets
        self._configJSON = json.dumps(config.to_dict()).encode()
        self.reloading: defer.Deferred[None] | None = None
        self.reloadQueued = False
        self.shuttingDown: defer.Deferred[None] | None = None
        self.startedAt = reactor.seconds()
        self.startedWall = time.time()
        self.everReady = False
        self._lastStatus = 0.0
        self._statusCall: Any = None
        self.watcher: CodeWatcher | None = None  # reload_on_change

    # -- startup ------------------------------------------------------------------------------
    def privilegedStartService(self) -> None:
        if not self.listenerSockets:
            bound: list[list[socket.socket]] = []
            try:
                for i, x in enumerate(self.config.listeners):
                    bound.append(self.sockets if i == 0 and self.sockets else self._bind(x))
            except Exception:
                for sock in (s for socks in bound for s in socks):
                    sock.close()
                raise
            self.listenerSockets = bound
        super().privilegedStartService()

    def _bind(self, x: Listener) -> list[socket.socket]:
        if x.unix_path:  # one socket for every worker: no SO_REUSEPORT for these
            try:
                return [unix_listening_socket(x.unix_path, x.mode, x.settings.backlog)]
            except OSError as e:
                raise CannotListenError(None, x.host, e) from None
        kind = socket.SOCK_DGRAM if x.type == "udp" else socket.SOCK_STREAM
        try:
            return listening_sockets(x.host, x.port, x.settings.backlog,
                                     self.settings.worker_num, kind)  # fmt: skip
        except OSError as e:
            raise CannotListenError(x.host, x.port, e) from None

    def startService(self) -> None:
        super().startService()
        if not self.listenerSockets:
            self.privilegedStartService()
        where = []
        for x, socks in zip(self.config.listeners, self.listenerSockets, strict=True):
            name = socks[0].getsockname()
            address = x.host if x.unix_path else f"{name[0]}:{name[1]}"
            where.append(f"udp://{address}" if x.type == "udp" else address)
        set_log_level(self.settings.log_level)
        log.info(
            "master (pid {pid}) listening on {where}; starting {n} workers",
            pid=os.getpid(), where=", ".join(where), n=self.settings.worker_num,
        )  # fmt: skip
        self.runDir = tempfile.mkdtemp(prefix="tx_swoole-")  # 0700: the processes' sockets
        if self.settings.task_worker_num:
            log.info("starting {n} task workers", n=self.settings.task_worker_num)
        for tid in range(self.settings.task_worker_num):
            self.taskWorkers[tid] = self._spawn(tid, kind="task")
        for wid in range(self.settings.worker_num):
            self.workers[wid] = self._spawn(wid)
        if self.config.processes:
            log.info("starting {n} processes: {names}", n=len(self.config.processes),
                     names=", ".join(p.name for p in self.config.processes))  # fmt: skip
        for index in range(len(self.config.processes)):
            self.processes[index] = self._spawn(index, kind="process")
        call_at_start(self.reactor, self._installSignals)
        if self.settings.reload_on_change:
            targets = watch_targets(self.config.base_dir, self.settings.reload_on_change_paths)
            self.watcher = CodeWatcher(self.reactor, targets, lambda path: self.reload())
            self.reactor.callWhenRunning(self.watcher.start)

    def signalHandlers(self) -> dict[int, Callable[[], Any]]:
        """TERM and INT: graceful shutdown; USR1: reload; USR2: reload the task workers."""
        handlers = shutdown_handlers(self.reactor)
        handlers[signal.SIGUSR1] = self.reload
        handlers[signal.SIGUSR2] = self.reloadTaskWorkers
        return handlers

    def _installSignals(self) -> None:
        """At start: our signals, and the title ``tx_swoole: master (FILE)``."""
        set_title("master", self.config.path)
        install_signals(self.reactor, self.signalHandlers())

    def table(self, kind: str) -> dict[int, Worker]:
        """The workers (``worker``), the task workers (``task``) or the ``[[process]]``
        processes (``process``), by id."""
        if kind == "process":
            return self.processes
        return self.taskWorkers if kind == "task" else self.workers

    def _spawn(self, wid: int, generation: int | None = None, kind: str = "worker") -> Worker:
        name = self.config.processes[wid].name if kind == "process" else ""
        worker = Worker(wid, generation or self.generation, self.reactor.seconds(), kind=kind,
                        name=name)  # fmt: skip
        args = [
            self.executable, "-m", "tx_swoole.process.worker", str(wid), str(worker.generation),
            self.reactorName or "", kind,
            os.path.join(self.runDir, f"peer-{kind}-{wid}-{worker.generation}.sock"),
        ]  # fmt: skip
        child_fds: dict[int, int | str] = {
            0: "w", 1: "r", 2: "r", CONTROL_OUT_FD: "r", CONFIG_FD: "w",
        }  # fmt: skip
        if kind == "task":
            args.append(os.path.join(self.runDir, f"task-{wid}-{worker.generation}.sock"))
        elif kind == "worker":
            for i, socks in enumerate(self.listenerSockets):
                child_fds[listen_fd(i)] = socks[wid % len(socks)].fileno()
        worker.process = self.spawn(
            WorkerProcess(self, worker), self.executable, args, env=os.environ,
            childFDs=child_fds,
        )  # fmt: skip
        worker.pid = getattr(worker.process, "pid", 0) or 0
        worker.process.writeToChild(CONFIG_FD, self._configJSON)
        worker.process.closeChildFD(CONFIG_FD)
        self.live.append(worker)
        for other in self.live:  # where the others are (later ones are announced)
            if other is worker or other.state != "ready":
                continue
            if kind == "worker" and other.kind == "task":
                self._tell(worker, "task_worker", index=other.id, path=other.path, pid=other.pid)
            self._tell(worker, "peer", kind=other.kind, index=other.id, path=other.peerPath,
                       pid=other.pid)  # fmt: skip
        return worker

    @staticmethod
    def _tell(worker: Worker, message: str, **fields: Any) -> None:
        data = encode(message, **fields)
        try:
            worker.process.writeToChild(0, data)
        except Exception:
            pass  # its stdin is gone: it is exiting anyway

    # -- messages and logs from workers -------------------------------------------------------
    def workerMessage(self, worker: Worker, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ready":
            worker.state = "ready"
            self.everReady = self.everReady or worker.kind != "process"  # (the app booted)
            self.bootFailures.pop((worker.kind, worker.id), None)
            log.info("{worker} ready", worker=worker.describe())
            worker.peerPath = str(message.get("peer", ""))
            if worker.kind == "task":
                worker.path = str(message.get("path", ""))
            for w in self.live:  # old ones being replaced too: they may still send tasks
                if w is worker:
                    continue
                if w.kind == "worker" and worker.kind == "task":
                    self._tell(w, "task_worker", index=worker.id, path=worker.path,
                               pid=worker.pid)  # fmt: skip
                if worker.peerPath:
                    self._tell(w, "peer", kind=worker.kind, index=worker.id,
                               path=worker.peerPath, pid=worker.pid)  # fmt: skip
            worker.ready.callback(None)
        elif kind == "stats":
            worker.connections = int(message.get("connections", 0))
            worker.requests = int(message.get("requests", 0))
            if isinstance(message.get("stats"), dict):
                worker.stats = message["stats"]
            self.writeStatus()
        elif kind == "recycle":
            if worker is self.table(worker.kind).get(worker.id) and worker.state == "ready":
                limit = "task_max_request" if worker.kind == "task" else "max_request"
                self.replace(worker.id, f"{limit} reached", worker.kind)
        elif kind == "boot_failed":
            log.error("{worker} failed to boot: {error}", worker=worker.describe(),
                      error=message.get("error", "?"))  # fmt: skip

    def workerLog(self, worker: Worker, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = eventFromJSON(text)
        except ValueError:
            event = None
        if isinstance(event, dict) and "log_level" in event:
            level = event.get("swoole_level") or getattr(event["log_level"], "name", "info")
            namespace = event.get("log_namespace", "-")
            event["log_system"] = f"{namespace}#{level} {worker.label} pid {worker.pid}"
            event["swoole_worker_id"] = worker.id
            event["swoole_worker_pid"] = worker.pid
            globalLogPublisher(event)
        else:
            log.info("[{name} pid {pid}] {line}", id=worker.id, pid=worker.pid, line=text,
                     name=worker.label)  # fmt: skip

    # -- reload and replacement ----------------------------------------------------------------
    def reloadTaskWorkers(self) -> defer.Deferred[None] | None:
        """``SIGUSR2``: replace the task workers only (as Swoole)."""
        if not self.taskWorkers:
            log.warn("SIGUSR2 ignored: there are no task workers (task_worker_num = 0)")
            return None
        return self.reload(kinds=("task",))

    def reload(
        self, kinds: tuple[str, ...] = ("task", "worker", "process")
    ) -> defer.Deferred[None] | None:
        """Replace every worker (and task worker, and ``[[process]]`` with ``reload =
        true``), new first; queued while a reload runs, refused on shutdown."""
        if self.shuttingDown is not None:
            log.warn("reload refused: shutting down")
            return None
        if self.reloading is not None:
            if not self.reloadQueued:
                self.reloadQueued = True
                log.warn("reload queued: a reload is already running (generation {g}); the "
                         "next one starts when it finishes", g=self.generation)  # fmt: skip
            else:
                log.warn("reload ignored: one is running and another is already queued")
            return None
        self.generation += 1
        log.info("reloading {n} workers and {t} task workers (generation {g})",
                 n=len(self.workers) if "worker" in kinds else 0,
                 t=len(self.taskWorkers) if "task" in kinds else 0, g=self.generation)  # fmt: skip
        replaced = [
            self.replace(wid, "reload", kind)
            for kind in kinds
            for wid in list(self.table(kind))
            if kind != "process" or self.config.processes[wid].reload
        ]
        all_done = defer.gatherResults(replaced, consumeErrors=True)

        def done(_: Any) -> None:
            self.reloading = None
            log.info("reload to generation {g} finished", g=self.generation)
            if self.reloadQueued:
                self.reloadQueued = False
                self.reload()

        self.reloading = all_done.addBoth(done)
        return self.reloading

    def replace(self, wid: int, why: str, kind: str = "worker") -> defer.Deferred[None]:
        """Start a new worker for ``wid``; once it is ready, drain the old one.

        With ``reload_async = false`` (Swoole's synchronous reload) the old worker drains and
        exits first, so two generations never run at once (less memory, a gap in capacity).
        """
        old = self.table(kind).get(wid)
        if not self.settings.reload_async and old is not None and old.state == "ready":
            self.retire(old, final=False)
            d: defer.Deferred[None] = defer.Deferred()
            old.exited.addBoth(
                lambda _: self._startReplacement(wid, old, why, kind).chainDeferred(d)
            )
            return d
        return self._startReplacement(wid, old, why, kind)

    def _startReplacement(
        self, wid: int, old: Worker | None, why: str, kind: str = "worker"
    ) -> defer.Deferred[None]:
        new = self._spawn(wid, self.generation, kind)
        self.table(kind)[wid] = new
        log.info("starting {new} to replace {old} ({why})", new=new.describe(),
                 old=old.describe() if old else "nothing", why=why)  # fmt: skip
        d: defer.Deferred[None] = defer.Deferred()

        def ready(_: Any) -> None:
            if old is not None and old.state != "exited":
                self.retire(old, final=False)
            d.callback(None)

        def failed(f: Failure) -> None:
            log.error("{new} could not boot; {old} keeps serving", new=new.describe(),
                      old=old.describe() if old else "no worker")  # fmt: skip
            if old is not None and old.state == "ready":
                self.table(kind)[wid] = old
            d.callback(None)

        new.ready.addCallbacks(ready, failed)
        return d

    def retire(self, worker: Worker, final: bool) -> None:
        """Tell ``worker`` to drain; SIGKILL it if it is still alive after max_wait_time."""
        if worker.state in ("draining", "exited"):
            return
        worker.state = "draining"
        if worker not in self.retiring:
            self.retiring.append(worker)
        self._tell(worker, "drain", final=final)
        worker.killCall = self.reactor.callLater(
            self.settings.max_wait_time + KILL_GRACE, self._kill, worker
        )

    def _kill(self, worker: Worker) -> None:
        worker.killCall = None
        if worker.state == "exited":
            return
        log.warn(
            "{worker} did not exit within max_wait_time={wait}s ({conns} connections open at "
            "its last report): worker exit timeout, forced termination",
            worker=worker.describe(), wait=self.settings.max_wait_time, conns=worker.connections,
        )  # fmt: skip
        try:
            worker.process.signalProcess("KILL")
        except Exception:
            pass

    # -- exits, crashes, boot failures ---------------------------------------------------------
    def workerEnded(self, worker: Worker, code: int) -> None:
        was = worker.state
        worker.state = "exited"
        if worker in self.live:
            self.live.remove(worker)
        if worker.killCall is not None and worker.killCall.active():
            worker.killCall.cancel()
        if worker in self.retiring:
            self.retiring.remove(worker)
        if was == "draining":
            log.info(
                "{worker} drained and exited (code {code})", worker=worker.describe(), code=code
            )
        if not worker.ready.called:
            worker.ready.errback(Failure(RuntimeError(f"exit code {code} before ready")))
            worker.ready.addErrback(lambda _: None)  # handled here when nobody waits on it
        worker.exited.callback(code)
        table = self.table(worker.kind)
        if was != "draining" and self.shuttingDown is None and table.get(worker.id) is worker:
            if worker.kind == "process":
                self._processEnded(worker, code)
            elif was == "booting":
                self._bootFailed(worker, code)
            else:
                log.warn("{worker} died unexpectedly (code {code}); respawning",
                         worker=worker.describe(), code=code)  # fmt: skip
                table[worker.id] = self._spawn(worker.id, worker.generation, worker.kind)
        self.writeStatus(force=True)

    def _processEnded(self, worker: Worker, code: int) -> None:
        """A ``[[process]]`` exited on its own: started again after a back-off that grows
        while it keeps exiting soon after it starts."""
        if self.reactor.seconds() - worker.started >= PROCESS_STABLE:
            self.processFailures.pop(worker.id, None)
        count = self.processFailures[worker.id] = self.processFailures.get(worker.id, 0) + 1
        delay = min(PROCESS_BACKOFF * 2 ** (count - 1), PROCESS_BACKOFF_MAX)
        log.warn("{worker} exited (code {code}); starting it again in {delay}s",
                 worker=worker.describe(), code=code, delay=delay)  # fmt: skip
        self.reactor.callLater(delay, self._respawnAfterBootFailure, worker)

    def _bootFailed(self, worker: Worker, code: int) -> None:
        if not self.everReady:
            log.error(
                "{worker} failed to boot (exit code {code}) before any worker was ready: the "
                "app cannot start (see its traceback above); the master exits",
                worker=worker.describe(), code=code,
            )  # fmt: skip
            self.fatal(BOOT_ERROR_EXIT)
            return
        key = (worker.kind, worker.id)
        count = self.bootFailures[key] = self.bootFailures.get(key, 0) + 1
        if count > len(BOOT_BACKOFF):
            log.error(
                "{worker} failed to boot {n} times (last exit code {code}); giving up on "
                "it: fix the app and reload (see the traceback above)",
                worker=worker.describe(), n=count, code=code,
            )  # fmt: skip
            del self.table(worker.kind)[worker.id]
            if not self.workers:
                log.error("no worker left; the master exits")
                self.fatal(BOOT_ERROR_EXIT)
            return
        delay = BOOT_BACKOFF[count - 1]
        log.warn("{worker} failed to boot (exit code {code}); retrying in {delay}s",
                 worker=worker.describe(), code=code, delay=delay)  # fmt: skip
        self.reactor.callLater(delay, self._respawnAfterBootFailure, worker)

    def _respawnAfterBootFailure(self, worker: Worker) -> None:
        table = self.table(worker.kind)
        if self.shuttingDown is None and table.get(worker.id) is worker:
            table[worker.id] = self._spawn(worker.id, worker.generation, worker.kind)

    def fatal(self, code: int) -> None:
        """Stop the master; the process then exits with ``code`` (twistd cleans up first)."""
        from tx_swoole.process._lifecycle import exit_after_shutdown

        if self.shuttingDown is None:
            exit_after_shutdown(code)
            self.reactor.callWhenRunning(self.reactor.stop)

    # -- shutdown -------------------------------------------------------------------------------
    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self.shuttingDown is None:
            self.shuttingDown = defer.ensureDeferred(self._shutdown())
        return self.shuttingDown

    async def _shutdown(self) -> None:
        started = time.monotonic()
        if self.watcher is not None:
            self.watcher.stop()
        for socks in self.listenerSockets:
            for sock in socks:
                if sock.type == socket.SOCK_STREAM:
                    refuse_new_connections(sock)  # (a Unix socket's file moves aside)
        everyone = [*self.workers.values(), *self.processes.values(), *self.retiring]
        workers = [w for w in everyone if w.kind != "task"]  # (and the [[process]] ones)
        task_workers = list(self.taskWorkers.values()) + [w for w in everyone if w.kind == "task"]
        log.info("shutting down: draining {n} workers", n=len(workers))
        # the workers first; the task workers serve them until they are gone
        for group in (workers, task_workers):
            for worker in group:
                if worker.state != "exited":
                    worker.state = "ready" if worker.state == "draining" else worker.state
                    self.retire(worker, final=True)
            await defer.gatherResults([w.exited for w in group if not w.exited.called])
        for sock in (s for socks in self.listenerSockets for s in socks):
            sock.close()
        for x in self.config.listeners:
            for leftover in (x.unix_path, x.unix_path + ".closing") if x.unix_path else ():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)  # the socket file goes with the server
        if self.runDir:
            shutil.rmtree(self.runDir, ignore_errors=True)
        if self._statusCall is not None and self._statusCall.active():
            self._statusCall.cancel()
        if self.statusPath and os.path.exists(self.statusPath):
            os.unlink(self.statusPath)
        log.info("all workers exited after {t:.2f}s; master exits", t=time.monotonic() - started)

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``python -m tx_swoole status --json`` prints."""
        now = self.reactor.seconds()
        order = {"worker": 0, "task": 1, "process": 2}
        workers = sorted(
            [*self.workers.values(), *self.taskWorkers.values(), *self.processes.values(),
             *self.retiring],
            key=lambda w: (order[w.kind], w.id, w.generation),
        )  # fmt: skip
        live = [w for w in workers if w.state != "exited"]
        totals = {key: sum(int(w.stats.get(key, 0)) for w in live if w.kind == "worker")
                  for key in _WORKER_SUMS}  # fmt: skip
        totals.update({key: sum(int(w.stats.get(key, 0)) for w in live if w.kind == "task")
                       for key in _TASK_SUMS})  # fmt: skip
        totals["start_time"] = int(self.startedWall)
        return {
            "stats": totals,
            "master": {
                "pid": os.getpid(), "generation": self.generation,
                "uptime": round(now - self.startedAt, 3), "worker_num": self.settings.worker_num,
                "task_worker_num": self.settings.task_worker_num,
                "process_num": len(self.config.processes),
                "reloading": self.reloading is not None,
            },
            "workers": [
                {"id": w.id, "kind": w.kind, **({"name": w.name} if w.name else {}),
                 "pid": w.pid, "generation": w.generation,
                 "state": w.state,
                 "age": round(now - w.started, 3), "connections": w.connections,
                 "requests": w.requests, "stats": w.stats}
                for w in live
            ],
        }  # fmt: skip

    def writeStatus(self, force: bool = False) -> None:
        now = self.reactor.seconds()
        if not self.statusPath:
            return
        if not force and now - self._lastStatus < STATUS_EVERY:
            if self._statusCall is None:  # coalesce: write once at the end of the window
                self._statusCall = self.reactor.callLater(
                    STATUS_EVERY - (now - self._lastStatus), self.writeStatus, True
                )
            return
        if self._statusCall is not None and self._statusCall.active():
            self._statusCall.cancel()
        self._statusCall = None
        if self.shuttingDown is not None and self.shuttingDown.called:
            return  # the file is gone with the master
        self._lastStatus = now
        write_status(self.statusPath, self.status())


def listening_sockets(
    host: str, port: int, backlog: int, count: int, kind: int = socket.SOCK_STREAM
) -> list[socket.socket]:
    """``count`` non-blocking listening sockets on the same ``host:port`` (SO_REUSEPORT);
    ``kind`` ``SOCK_DGRAM``: bound UDP sockets.

    One per worker id, owned by the master: the kernel spreads new connections evenly over
    them (one shared socket lets whichever worker wakes first take a whole burst), and since
    a socket outlives the workers that adopt it, the connections queued on it are accepted by
    the next worker with that id after a reload or crash instead of being reset.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(max(count, 1)):
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            for other in sockets:
                other.close()
            raise
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
        port = sock.getsockname()[1]  # port 0: the others join the port the first one got
        sockets.append(sock)
    return sockets
