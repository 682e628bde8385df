"""The workers' side of task workers: ``server.task(data, dstWorkerId=-1, timeout=None)``.

A :class:`TaskDispatcher` in each worker holds one Unix-socket connection to every task
worker (the master says where each listens, and again when one is replaced), sends each task
straight to one, and fires the task's Deferred with the result.  ``dstWorkerId = -1`` picks
the least busy task worker: the fewest of this worker's tasks outstanding on it, then the
lowest load it last reported (it reports with every result), never merely the next in turn.

Errors, each a :class:`~tx_swoole.errors.TaskError`: the handler raised
(:class:`~tx_swoole.errors.TaskFailedError` with its type and message), no result within
``timeout`` (:class:`~tx_swoole.errors.TaskTimeoutError`), the task worker died holding it
(:class:`~tx_swoole.errors.TaskWorkerDiedError`), ``task_queue_max`` tasks already outstanding
(:class:`~tx_swoole.errors.TaskQueueFullError`), data or result too large or not picklable
(:class:`~tx_swoole.errors.TaskSerializationError`).  A draining task worker hands back the
tasks it had not started; they go to another task worker (or, for a ``dstWorkerId``, its
replacement) and wait here while none is connected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import (
    FramingError,
    NoTaskWorkersError,
    TaskFailedError,
    TaskQueueFullError,
    TaskSerializationError,
    TaskTimeoutError,
    TaskWorkerDiedError,
)
from tx_swoole.process._task import (
    BYE,
    DRAINING,
    ERROR,
    REQUEUE,
    RESULT,
    TASK,
    FrameReader,
    dumps,
    frame,
    loads,
    parse_error,
)
from tx_swoole.protocols.tcp import CONNECTION_DONE
from tx_swoole.reactor import IServerReactor
from tx_swoole.settings import Settings
from tx_swoole.transport import send_now

log = SwooleLogger("tx_swoole.task")
__all__ = ["TaskDispatcher"]


class _Pending:
    __slots__ = ("taskId", "deferred", "payload", "dst", "channel", "timer")

    def __init__(self, task_id: int, payload: bytes, dst: int) -> None:
        self.taskId = task_id
        self.deferred: defer.Deferred[Any] = defer.Deferred()
        self.payload = payload
        self.dst = dst
        self.channel: TaskWorkerChannel | None = None
        self.timer: IDelayedCall | None = None


class TaskWorkerChannel(Protocol):
    """This worker's connection to one task worker."""

    def __init__(self, dispatcher: TaskDispatcher, index: int, pid: int) -> None:
        self.dispatcher = dispatcher
        self.index = index
        self.pid = pid
        self.reader = FrameReader(dispatcher.settings.package_max_length)
        self.outstanding = 0  # this worker's tasks on it
        self.load = 0  # what the task worker last reported
        self.draining = False  # it said DRAINING, or a replacement connected: no new tasks
        self.lastUsed = 0  # when it was last sent a task (ties go to the least recently used)

    def describe(self) -> str:
        return f"task worker #{self.index} (pid {self.pid})"

    def connectionMade(self) -> None:
        self.dispatcher.channelUp(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FramingError as e:
            log.error("connection to {tw} closed: {error}", tw=self.describe(), error=e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        dispatcher = self.dispatcher
        for f in frames:
            if f.kind == RESULT or f.kind == ERROR:
                self.load = f.number
                dispatcher.answered(self, f.kind, f.taskId, f.payload)
            elif f.kind == REQUEUE:
                dispatcher.requeued(self, f.taskId)
            elif f.kind == DRAINING:
                self.draining = True
                send_now(self.transport, frame(BYE))
                dispatcher.flushBacklog()

    def sendTask(self, pending: _Pending) -> None:
        pending.channel = self
        self.outstanding += 1
        self.lastUsed = pending.taskId
        send_now(self.transport, frame(TASK, pending.taskId, self.dispatcher.workerId,
                                       pending.payload))  # fmt: skip

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        self.dispatcher.channelLost(self)


class _ChannelFactory(ClientFactory):
    noisy = False

    def __init__(self, dispatcher: TaskDispatcher, index: int, pid: int) -> None:
        self.dispatcher, self.index, self.pid = dispatcher, index, pid

    def buildProtocol(self, addr: Any) -> TaskWorkerChannel:
        return TaskWorkerChannel(self.dispatcher, self.index, self.pid)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        log.warn("cannot reach task worker #{index} (pid {pid}): {error}; waiting for the "
                 "master to announce its replacement", index=self.index, pid=self.pid,
                 error=reason.getErrorMessage())  # fmt: skip


class TaskDispatcher:
    """Sends tasks to the task workers and waits for their results (module docstring).

    ``finish`` (the ``[events] finish`` hook, optional) is called as ``finish(server,
    taskId, result)`` when a result arrives, as Swoole's onFinish, before the task's Deferred
    fires.

    Resource handling: at most ``task_queue_max`` tasks outstanding, each at most
    ``package_max_length`` bytes pickled; their payloads are kept until answered (a draining
    task worker may hand them back).
    """

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        reactor: IServerReactor,
        *,
        server: Any = None,
        finish: Callable[..., Any] | None = None,
    ) -> None:
        self.settings = settings
        self.workerId = worker_id
        self.reactor = reactor
        self.server = server
        self.finish = finish
        self.channels: dict[int, TaskWorkerChannel] = {}  # index -> the one taking new tasks
        self.others: set[TaskWorkerChannel] = set()  # draining or replaced, still open
        self.pending: dict[int, _Pending] = {}
        self.backlog: deque[_Pending] = deque()  # waiting for a task worker to connect
        self.taskCount = 0
        self._nextId = 0

    # -- the API ----------------------------------------------------------------------------
    def task(self, data: Any, dstWorkerId: int = -1, timeout: float | None = None) -> Any:  # noqa: N803
        """Run ``data`` through ``[events] task`` in a task worker; a Deferred of its result."""
        count = self.settings.task_worker_num
        if not -1 <= dstWorkerId < count:
            return defer.fail(NoTaskWorkersError(
                f"dstWorkerId={dstWorkerId} names no task worker (task_worker_num={count}: "
                f"-1 for any, or 0..{count - 1})"
            ))  # fmt: skip
        if len(self.pending) >= self.settings.task_queue_max:
            return defer.fail(TaskQueueFullError(
                f"worker {self.workerId} already waits on {len(self.pending)} tasks "
                f"(task_queue_max={self.settings.task_queue_max}); raise task_queue_max or "
                "task_worker_num, or send fewer at once"
            ))  # fmt: skip
        self._nextId += 1
        task_id = self._nextId
        try:
            payload = dumps(data, self.settings.package_max_length, f"the data of task {task_id}")
        except TaskSerializationError as e:
            return defer.fail(e)
        pending = _Pending(task_id, payload, dstWorkerId)
        self.pending[task_id] = pending
        if timeout is not None:
            pending.timer = self.reactor.callLater(timeout, self._timedOut, task_id, timeout)
        self._assign(pending)
        return pending.deferred

    def stats(self) -> dict[str, int]:
        return {"task_count": self.taskCount, "tasking_num": len(self.pending),
                "task_queue_num": len(self.backlog)}  # fmt: skip

    # -- task workers come and go -------------------------------------------------------------
    def taskWorkerReady(self, index: int, path: str, pid: int) -> None:
        """The master says task worker ``index`` listens at ``path``: connect."""
        self.reactor.connectUNIX(path, _ChannelFactory(self, index, pid), timeout=10)

    def channelUp(self, channel: TaskWorkerChannel) -> None:
        old = self.channels.get(channel.index)
        if old is not None:
            old.draining = True  # replaced: it gets no more tasks, and answers what it holds
            self.others.add(old)
        self.channels[channel.index] = channel
        self.flushBacklog()

    def channelLost(self, channel: TaskWorkerChannel) -> None:
        if self.channels.get(channel.index) is channel:
            del self.channels[channel.index]
        self.others.discard(channel)
        lost = [p for p in self.pending.values() if p.channel is channel]
        if lost:
            log.warn("{tw} is gone with {n} of worker {id}'s tasks; they fail with "
                     "TaskWorkerDiedError", tw=channel.describe(), n=len(lost),
                     id=self.workerId)  # fmt: skip
        for p in lost:
            self._fail(p, TaskWorkerDiedError(
                f"{channel.describe()} died holding task {p.taskId} (it may or may not have "
                "run); the task worker is respawned"
            ))  # fmt: skip

    # -- dispatch ---------------------------------------------------------------------------
    def _choose(self, dst: int) -> TaskWorkerChannel | None:
        if dst >= 0:
            channel = self.channels.get(dst)
            return channel if channel is not None and not channel.draining else None
        best = None
        for channel in self.channels.values():
            if channel.draining:
                continue
            if best is None or (channel.outstanding, channel.load, channel.lastUsed) < (
                best.outstanding, best.load, best.lastUsed
            ):  # fmt: skip
                best = channel
        return best

    def _assign(self, pending: _Pending) -> None:
        channel = self._choose(pending.dst)
        if channel is None:
            self.backlog.append(pending)
        else:
            channel.sendTask(pending)

    def flushBacklog(self) -> None:
        waiting, self.backlog = self.backlog, deque()
        for pending in waiting:
            if pending.taskId in self.pending:
                self._assign(pending)

    # -- answers ------------------------------------------------------------------------------
    def _take(self, channel: TaskWorkerChannel, task_id: int) -> _Pending | None:
        pending = self.pending.get(task_id)
        if pending is None or pending.channel is not channel:
            return None  # timed out meanwhile: its late answer is dropped
        channel.outstanding -= 1
        pending.channel = None
        return pending

    def answered(self, channel: TaskWorkerChannel, kind: int, task_id: int, payload: bytes) -> None:
        pending = self._take(channel, task_id)
        if pending is None:
            return
        del self.pending[task_id]
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        self.taskCount += 1
        if kind == ERROR:
            what, type_name, message = parse_error(payload)
            if what == "serialize":
                pending.deferred.errback(TaskSerializationError(message))
            else:
                pending.deferred.errback(TaskFailedError(task_id, type_name, message))
            return
        try:
            value = loads(payload, f"the result of task {task_id}")
        except TaskSerializationError as e:
            pending.deferred.errback(e)
            return
        if self.finish is not None:
            try:
                self.finish(self.server, task_id, value)
            except Exception:
                log.failure("finish hook failed for task {taskId}", taskId=task_id)
        pending.deferred.callback(value)

    def requeued(self, channel: TaskWorkerChannel, task_id: int) -> None:
        pending = self._take(channel, task_id)
        if pending is not None:
            self._assign(pending)

    def _timedOut(self, task_id: int, timeout: float) -> None:
        pending = self.pending.get(task_id)
        if pending is None:
            return
        pending.timer = None
        where = pending.channel.describe() if pending.channel else "no task worker yet"
        self._fail(pending, TaskTimeoutError(
            f"task {task_id} got no result within {timeout}s ({where})"
        ))  # fmt: skip

    def _fail(self, pending: _Pending, error: Exception) -> None:
        self.pending.pop(pending.taskId, None)
        if pending.channel is not None:
            pending.channel.outstanding -= 1
            pending.channel = None
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        pending.deferred.errback(error)

    def close(self) -> None:
        """The worker exits: disconnect from the task workers."""
        for channel in [*self.channels.values(), *self.others]:
            if channel.transport is not None:
                channel.transport.loseConnection()
