"""A task worker: runs ``[events] task`` for the workers, one task at a time.

Swoole's task workers, as a Twisted service in its own process.  The master spawns
``task_worker_num`` of them (``task worker #N``, worker id ``worker_num + N`` as Swoole
numbers them) next to the workers.  Each listens on a Unix socket of its own in the master's
private runtime directory; the master tells every worker where, and the workers connect
directly, so a task's bytes never pass through the master.  Frames: :mod:`._task`.

The handler, plain or ``async def``, is called as ``task(server, taskId, srcWorkerId, data)``
and returns the result; ``server`` is this service (``server.taskworker`` is True).  Tasks run
one at a time, in the order they arrived (one caller's tasks keep their order); what a handler
raises goes back to the caller as :class:`~tx_swoole.errors.TaskFailedError`, its traceback
logged here.

Draining (reload, ``task_max_request``): the listening socket closes, the task running
finishes and its result is sent, the tasks queued go back to their callers unrun
(``REQUEUE``), which send them to the replacement; a caller answers ``DRAINING`` with ``BYE``
and sends nothing more, so no task is lost or run twice.  On shutdown (``final``) the
workers are gone first, so there is nothing left to hand back.  After ``max_wait_time`` the
task worker exits whatever it still holds (its callers learn with
:class:`~tx_swoole.errors.TaskWorkerDiedError`).
"""

from __future__ import annotations

import inspect
import os
from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.config import ServerConfig, resolve
from tx_swoole.errors import FramingError, TaskSerializationError
from tx_swoole.process._lifecycle import BootingService, awaited, call_hook
from tx_swoole.process._task import (
    BYE,
    DRAINING,
    ERROR,
    REQUEUE,
    RESULT,
    TASK,
    FrameReader,
    dumps,
    error_payload,
    frame,
    loads,
)
from tx_swoole.process.messages import Peers, PeerServer
from tx_swoole.protocols.tcp import CONNECTION_DONE
from tx_swoole.reactor import IServerReactor, default_reactor
from tx_swoole.transport import send_now, stop_unix_port

log = SwooleLogger("tx_swoole.task")
__all__ = ["TaskWorkerService"]


class TaskChannel(Protocol):
    """One worker's connection to this task worker."""

    def __init__(self, service: TaskWorkerService) -> None:
        self.service = service
        self.reader = FrameReader(service.settings.package_max_length)
        self.said_bye = False
        self.gone = False

    def connectionMade(self) -> None:
        self.service.channels.add(self)
        if self.service.draining:
            send_now(self.transport, frame(DRAINING))

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FramingError as e:
            log.error("task channel closed: {error}", error=e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        service = self.service
        for f in frames:
            if f.kind == TASK:
                service.enqueue(self, f.taskId, f.number, f.payload)
            elif f.kind == BYE:
                self.said_bye = True
                service.checkDrained()
        if service.current is None:  # the whole read is queued first, then the next task runs
            service.runNext()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.gone = True
        self.service.channels.discard(self)
        self.service.channelLost(self)

    def reply(self, data: bytes) -> None:
        if not self.gone:
            send_now(self.transport, data)


class _ChannelFactory(Factory):
    noisy = False

    def __init__(self, service: TaskWorkerService) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> TaskChannel:
        return TaskChannel(self.service)


class TaskWorkerService(PeerServer, BootingService):
    """The task worker's service (module docstring); the ``server`` its handler gets.

    Resource handling: holds the queued tasks (each at most ``package_max_length`` bytes, as
    many as the workers' ``task_queue_max`` allows them to send) and the listening socket
    (removed on stop).  Error handling: a handler's exception or an unpicklable result is
    answered as an error of that task; the task worker carries on.
    """

    taskworker = True

    def __init__(
        self,
        config: ServerConfig,
        *,
        index: int = 0,
        path: str = "",
        reactor: IServerReactor | None = None,
        handler: Any = None,
        peer_path: str = "",
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.taskWorkerId = index
        self.workerId = config.settings.worker_num + index  # as Swoole numbers task workers
        self.path = path
        self.reactor = reactor or default_reactor()
        self.channels: set[TaskChannel] = set()
        self.queue: deque[tuple[TaskChannel, int, int, bytes]] = deque()
        self.current: tuple[TaskChannel, int, int] | None = None  # running: channel, id, source
        self.draining = False
        self.final = False
        self.taskCount = 0  # tasks finished (the recycle count)
        self.maxRequestReached: Any = None  # set by the runtime (task_max_request)
        self.ready: defer.Deferred[None] = defer.succeed(None)
        self.port: Any = None
        self._hooks: dict[str, Any] = {}
        self._handler: Any = handler  # (else [events] task, imported at boot)
        self._peerPath = peer_path  # (the others are met before boot; listened for after)
        self.peers = Peers(self.settings, "task", index, self.reactor, server=self) if (
            peer_path
        ) else None  # fmt: skip
        self._drained: defer.Deferred[None] | None = None
        self._stopping: defer.Deferred[None] | None = None

    # -- what the runtime reads -------------------------------------------------------------
    @property
    def requests(self) -> int:
        return self.taskCount

    @property
    def connectionCount(self) -> int:
        return len(self.channels)

    def setRecycleCheck(self, check: Any) -> None:
        """Call ``check`` after each task (``task_max_request``)."""
        self.maxRequestReached = check

    def stats(self) -> dict[str, Any]:
        return {
            "worker_id": self.workerId, "task_worker_id": self.taskWorkerId,
            "task_count": self.taskCount, "tasking_num": int(self.current is not None),
            "task_queue_num": len(self.queue),
        }  # fmt: skip

    @property
    def load(self) -> int:
        return len(self.queue) + (self.current is not None)

    # -- boot -------------------------------------------------------------------------------
    async def _boot(self) -> None:
        base = self.config.base_dir
        self._hooks = {name: resolve(ref, base) for name, ref in self.config.events.items()}
        if self._handler is None:
            self._handler = self._hooks["task"]
        factory = _ChannelFactory(self)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.port = self.reactor.listenUNIX(self.path, factory, mode=0o600)
        log.info("task worker #{index} (pid {pid}) running {task} on {path}",
                 index=self.taskWorkerId, pid=os.getpid(), task=self.config.events["task"],
                 path=self.path)  # fmt: skip
        if self.peers is not None:
            self.peers.pipeMessage = self._hooks.get("pipe_message")
            self.peers.listen(self._peerPath)
        if "worker_start" in self._hooks:
            await call_hook(self._hooks["worker_start"], self, self.workerId)

    # -- running tasks ----------------------------------------------------------------------
    def enqueue(self, channel: TaskChannel, task_id: int, src: int, payload: bytes) -> None:
        if self.draining and not self.final:
            channel.reply(frame(REQUEUE, task_id))  # sent before the caller saw DRAINING
            return
        self.queue.append((channel, task_id, src, payload))

    def runNext(self) -> None:
        """Run the next task; the one after it waits a reactor turn (reads, writes, the
        master's drain), so a queue of blocking tasks does not hold the loop."""
        while self.queue and self.current is None:
            channel, task_id, src, payload = self.queue.popleft()
            if channel.gone:
                continue
            self.current = (channel, task_id, src)
            try:
                data = loads(payload, f"the data of task {task_id}")
                result = self._handler(self, task_id, src, data)
            except Exception:
                result = Failure()
            if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
                defer.ensureDeferred(awaited(result)).addBoth(self._finishedLater)
                return
            self._finishedLater(result)
            return

    def _finishedLater(self, outcome: Any) -> None:
        self._finished(outcome)
        if self.queue:
            self.reactor.callLater(0, self.runNext)

    def _finished(self, outcome: Any) -> None:
        assert self.current is not None
        channel, task_id, src = self.current
        self.current = None
        self.taskCount += 1
        load = self.load
        if isinstance(outcome, Failure):
            if outcome.check(TaskSerializationError):
                payload = error_payload("serialize", "TaskSerializationError",
                                        outcome.getErrorMessage())  # fmt: skip
            else:
                exc_type: Any = outcome.type
                name = f"{exc_type.__module__}.{exc_type.__qualname__}"
                log.failure("task {taskId} from worker {src} raised {error}", outcome,
                            taskId=task_id, src=src,
                            error=f"{name}: {outcome.getErrorMessage()}")  # fmt: skip
                payload = error_payload("raised", name, outcome.getErrorMessage())
            channel.reply(frame(ERROR, task_id, load, payload))
        else:
            try:
                value = dumps(outcome, self.settings.package_max_length,
                              f"the result of task {task_id}")  # fmt: skip
            except TaskSerializationError as e:
                channel.reply(
                    frame(
                        ERROR,
                        task_id,
                        load,
                        error_payload("serialize", "TaskSerializationError", str(e)),
                    )
                )
            else:
                channel.reply(frame(RESULT, task_id, load, value))
        if self.maxRequestReached is not None:
            self.maxRequestReached()
        if self.draining:
            self.checkDrained()

    # -- draining ---------------------------------------------------------------------------
    def drain(self, final: bool) -> defer.Deferred[None]:
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._drain(final))
        return self._stopping

    async def _drain(self, final: bool) -> None:
        self.draining, self.final = True, final
        self._drained = defer.Deferred()
        if self.port is not None:  # every connection that made it in hears DRAINING
            await stop_unix_port(self.port, self.path)
        if not final:
            if self.queue:
                log.info("task worker #{index} (pid {pid}) drains: {n} queued tasks go back to "
                         "their workers for the replacement", index=self.taskWorkerId,
                         pid=os.getpid(), n=len(self.queue))  # fmt: skip
            while self.queue:  # back to their callers, unrun, for the replacement
                channel, task_id, _, _ = self.queue.popleft()
                channel.reply(frame(REQUEUE, task_id))
            for channel in list(self.channels):
                channel.reply(frame(DRAINING))
        self.checkDrained()
        drained = self._drained
        drained.addTimeout(self.settings.max_wait_time, self.reactor)
        try:
            await drained
        except defer.TimeoutError:
            log.warn(
                "task worker #{index} (pid {pid}) still held {n} tasks after max_wait_time="
                "{wait}s; exiting (their callers get TaskWorkerDiedError)",
                index=self.taskWorkerId, pid=os.getpid(), n=self.load,
                wait=self.settings.max_wait_time,
            )  # fmt: skip
        for channel in list(self.channels):
            channel.transport.loseConnection()  # type: ignore[union-attr]
        if self.peers is not None:
            self.peers.close()
        if "worker_stop" in self._hooks:
            try:
                await call_hook(self._hooks["worker_stop"], self, self.workerId)
            except Exception:
                log.failure("worker_stop hook of task worker #{index} failed",
                            index=self.taskWorkerId)  # fmt: skip

    def checkDrained(self) -> None:
        """Done draining once nothing runs or waits and every caller said BYE (or left)."""
        if not self.draining or self.current is not None or self.queue:
            return
        if self.final:  # the workers left first: wait for their channels to close
            done = not self.channels
        else:
            done = all(c.said_bye or c.gone for c in self.channels)
        if done and self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    def channelLost(self, channel: TaskChannel) -> None:
        if self.draining:
            self.checkDrained()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.drain(final=True)
