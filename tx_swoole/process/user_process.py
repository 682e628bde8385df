"""``[[process]]``: a process of the app's own beside the workers (Swoole's ``addProcess``).

The master starts one process per ``[[process]]`` table once it runs, supervises it and
stops it with the workers.  The process imports ``app`` (``module:callable``) and calls it
with :class:`UserProcessService`, the ``server`` it can use: ``sendMessage(data,
dstWorkerId)`` to a worker's ``[events] pipe_message`` (its own ``pipe_message`` gets what the
others send it: it is worker ``worker_num + task_worker_num + index``), ``send``, ``close``,
``push``, ``exists`` and ``listConnections`` for the workers' connections, ``onStop(hook)``,
``workerId``, ``name``, ``settings``.

- A plain callable sets things up on the reactor (a ``LoopingCall``, a client) and returns:
  the process keeps running them.  An ``async def`` callable (or one returning a Deferred) is
  the process's work: when it returns, the process exits and the master starts it again
  (Swoole's way: the callback ended).
- Stop (shutdown, or a reload with ``reload = true``): the running coroutine is cancelled
  (``CancelledError`` at its ``await``, so ``finally`` blocks run), the ``onStop`` hooks run,
  then the process exits; the master kills it after ``max_wait_time`` as it does workers.
- A failure (an import error, an exception from the callable or its coroutine) is logged
  with its traceback and the process exits with code 1; the master starts it again after a
  back-off (0.5 s, doubling to 30 s, back to 0.5 s once a process has run 30 s).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.config import ServerConfig, resolve
from tx_swoole.process._lifecycle import BootingService, awaited, call_hook
from tx_swoole.process.messages import Peers, PeerServer, process_id
from tx_swoole.reactor import IServerReactor, default_reactor

log = SwooleLogger("tx_swoole.process")
__all__ = ["UserProcessService"]
FAILED_EXIT = 1


class UserProcessService(PeerServer, BootingService):
    """Runs ``[[process]]`` table ``index`` (module docstring).

    ``finished`` fires with an exit code when the process ends on its own (its coroutine
    returned or failed); the runtime then exits with it.
    """

    taskworker = False

    def __init__(
        self,
        config: ServerConfig,
        *,
        index: int = 0,
        reactor: IServerReactor | None = None,
        peer_path: str = "",
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.entry = config.processes[index]
        self.name = self.entry.name
        self.processIndex = index
        self.workerId = process_id(self.settings, "process", index)
        self.reactor = reactor or default_reactor()
        self.ready: defer.Deferred[None] = defer.succeed(None)
        self.finished: defer.Deferred[int] = defer.Deferred()
        self.work: defer.Deferred[Any] | None = None  # the callable's coroutine
        self.peers = Peers(self.settings, "process", index, self.reactor, server=self) if (
            peer_path
        ) else None  # fmt: skip
        self._peerPath = peer_path
        self._stopHooks: list[Any] = []
        self.stopping = False
        self._stopping: defer.Deferred[None] | None = None

    # -- what the runtime reads -------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Messages received from the other processes."""
        return self.peers.messageCount if self.peers is not None else 0

    connectionCount = 0

    def stats(self) -> dict[str, Any]:
        return {"worker_id": self.workerId, "process": self.name,
                "pipe_message_count": self.requests}  # fmt: skip

    def onStop(self, hook: Any) -> None:  # noqa: N802
        """Call ``hook(server)`` (plain or async) when the process stops."""
        self._stopHooks.append(hook)

    # -- boot -------------------------------------------------------------------------------
    async def _boot(self) -> None:
        base = self.config.base_dir
        target = resolve(self.entry.app, base)
        if not callable(target):
            raise TypeError(f"[[process]] app = {self.entry.app!r} must be callable(server)")
        if self.peers is not None:
            pipe = self.config.events.get("pipe_message")
            self.peers.pipeMessage = resolve(pipe, base) if pipe else None
            self.peers.listen(self._peerPath)
        log.info("process {name} #{index} (pid {pid}) running {app}", name=self.name,
                 index=self.processIndex, pid=os.getpid(), app=self.entry.app)  # fmt: skip
        result = target(self)
        if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
            self.work = defer.ensureDeferred(awaited(result))
            self.work.addBoth(self._ended)

    def _ended(self, outcome: Any) -> None:
        if self.stopping:
            return  # stopped: cancelled, or it finished while the hooks ran
        if isinstance(outcome, Failure):
            log.failure("process {name} (pid {pid}): {app} failed", outcome, name=self.name,
                        pid=os.getpid(), app=self.entry.app)  # fmt: skip
            self.finished.callback(FAILED_EXIT)
        else:
            log.info("process {name} (pid {pid}): {app} returned; the process exits and the "
                     "master starts it again", name=self.name, pid=os.getpid(),
                     app=self.entry.app)  # fmt: skip
            self.finished.callback(0)

    # -- stop -------------------------------------------------------------------------------
    def drain(self, final: bool) -> defer.Deferred[None]:
        if self._stopping is None:
            self.stopping = True
            self._stopping = defer.ensureDeferred(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        running = self.work
        if running is not None and not running.called:
            running.cancel()
        for hook in self._stopHooks:
            try:
                await call_hook(hook, self)
            except Exception:
                log.failure("onStop hook of process {name} failed", name=self.name)
        if self.peers is not None:
            self.peers.close()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.drain(final=True)
