"""What the master, the workers and the in-process server share: exit codes and signals.

Nothing here imports the twistd plugin (:mod:`tx_swoole.tap`); the plugin builds on this.
"""

from __future__ import annotations

import atexit
import gc
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import logfile

from tx_swoole._log import SwooleLogger, set_log_level
from tx_swoole.reactor import IServerReactor

log = SwooleLogger("tx_swoole.process")
BOOT_ERROR_EXIT = 3  # like gunicorn's WORKER_BOOT_ERROR: the app cannot start


class BootingService(Service):
    """A worker's, task worker's or user process's service: it boots in the background
    (``_boot``) and ``self.ready`` fires when it is running, or fails with the error."""

    settings: Any
    ready: defer.Deferred[None]

    def startService(self) -> None:
        super().startService()
        set_log_level(self.settings.log_level)
        self.ready = defer.ensureDeferred(self._boot())

    async def _boot(self) -> None:
        raise NotImplementedError


async def awaited(result: Any) -> Any:
    """``result``, awaited first if it is an awaitable or a Deferred (a hook's answer)."""
    if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
        return await result
    return result


async def call_hook(hook: Any, *args: Any) -> Any:
    """Call an event hook, plain or ``async def`` (or returning a Deferred); its result."""
    return await awaited(hook(*args))


def write_status(path: str, status: dict[str, Any]) -> None:
    """Replace the status file at ``path`` atomically (``python -m tx_swoole status`` reads
    it); a failure is logged, never raised."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(status, f)
        os.replace(tmp, path)
    except OSError as e:
        log.warn("cannot write status file {path}: {error}", path=path, error=e.strerror)


def exit_after_shutdown(code: int) -> None:
    """Make the process exit with ``code`` once twistd has cleaned up (pid file removed)."""

    def _exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(_exit)


def install_signals(reactor: IReactorFromThreads, handlers: dict[int, Callable[[], Any]]) -> None:
    """Route signals to ``handlers`` (run in the reactor thread); ignore SIGPIPE.

    TERM and INT stop the reactor gracefully and the process exits 0, instead of twistd's
    re-raising of the signal at exit.  Call once the reactor runs (it installs its own first).
    """
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for sig, handler in handlers.items():
        signal.signal(sig, _deliver(reactor, handler))


def call_at_start(reactor: Any, f: Callable[..., Any], *args: Any) -> None:
    """Call ``f(*args)`` right after the reactor installed its signal handlers, in the same
    startup phase (now if it runs already): installing ours there, no signal in between
    reaches twistd's, which would end the process by re-raising it (exit -15 for a SIGTERM
    just after start, with no graceful shutdown)."""
    if reactor.running:
        f(*args)
    else:
        reactor.addSystemEventTrigger("during", "startup", f, *args)


def hold_signals(reactor: Any, handlers: dict[int, Callable[[], Any]]) -> None:
    """Until the reactor runs, a signal of ``handlers`` waits for it and is then handled,
    instead of taking its default action (SIGTERM or SIGUSR1 would kill the process while
    twistd still starts up).  :func:`install_signals` takes over once the reactor runs."""
    for sig, handler in handlers.items():
        signal.signal(sig, _later(reactor, handler))


def _later(reactor: Any, handler: Callable[[], Any]) -> Callable[[int, Any], None]:
    def on_signal(_sig: int, _frame: Any) -> None:
        reactor.callWhenRunning(handler)

    return on_signal


def _deliver(
    reactor: IReactorFromThreads, handler: Callable[[], Any]
) -> Callable[[int, Any], None]:
    def on_signal(_sig: int, _frame: Any) -> None:
        reactor.callFromThread(handler)

    return on_signal


REOPEN_LOGS = signal.SIGRTMIN  # Swoole's signal for reopening log files (USR1 is reload)


def reopen_logs() -> int:
    """Reopen every log file of this process (``twistd --logfile``'s, and any other
    ``twisted.python.logfile`` file): after ``logrotate`` moved them, lines go to new files.
    Returns how many were reopened."""
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, logfile.BaseLogFile):
            try:
                obj.reopen()
            except (OSError, AttributeError, ValueError) as e:  # (a closed one has no file)
                log.warn("could not reopen log file {path}: {e}", path=getattr(obj, "path", "?"),
                         e=e)  # fmt: skip
                continue
            count += 1
    log.info("log files reopened ({n})", n=count)
    return count


def shutdown_handlers(reactor: IServerReactor) -> dict[int, Callable[[], Any]]:
    """TERM and INT: graceful shutdown through ``reactor.stop`` (services drain first);
    RTMIN: reopen the log files."""

    def stop() -> None:
        if reactor.running:
            log.info("shutdown requested: draining")
            reactor.stop()

    return {signal.SIGTERM: stop, signal.SIGINT: stop, REOPEN_LOGS: reopen_logs}
