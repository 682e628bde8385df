"""The blocked-reactor watchdog: a WARNING with the stack of whatever holds the reactor.

A ``requests.get()``, a ``time.sleep()`` or a CPU loop in a handler stalls every connection
of its worker, silently.  With ``reactor_stall_timeout`` set, the reactor stamps the time
every quarter of it, and a daemon thread checks the stamp: once the reactor has not turned for
longer than the setting, it logs the main thread's stack (read through
``sys._current_frames``), once per stall, and counts the stall (``reactor_stall_count`` in
``server.stats()``).  When the reactor turns again, an INFO line says how long it was held.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from tx_swoole._log import SwooleLogger

log = SwooleLogger("tx_swoole.watchdog")
__all__ = ["Watchdog"]


class Watchdog:
    """Watches the reactor of the thread that creates it (see the module docstring).

    Resource handling: one daemon thread and one LoopingCall, both stopped by :meth:`stop`.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        timeout: float,
        who: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.who = who
        self.stalls = 0
        self._clock = clock
        self._last = clock()
        self._stalledSince: float | None = None
        self._mainThread = threading.get_ident()
        self._beat = task.LoopingCall(self.beat)
        self._beat.clock = reactor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._last = self._clock()
        self._beat.start(self.timeout / 4, now=False)
        self._thread = threading.Thread(target=self._watch, name="tx_swoole watchdog",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat.running:
            self._beat.stop()

    def beat(self) -> None:
        """The reactor turned (a LoopingCall)."""
        now = self._clock()
        self._last = now
        if self._stalledSince is not None:
            log.info("{who}: the reactor turns again after {t:.2f}s", who=self.who,
                     t=now - self._stalledSince)  # fmt: skip
            self._stalledSince = None

    def check(self, now: float) -> str | None:
        """The watchdog thread's test: the stack to report when a new stall began, else None."""
        last = self._last
        if now - last <= self.timeout or self._stalledSince == last:
            return None
        self._stalledSince = last
        self.stalls += 1
        frame = sys._current_frames().get(self._mainThread)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"

    def _watch(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            stack = self.check(self._clock())
            if stack is not None:
                log.warn(
                    "{who}: the reactor has not turned for over reactor_stall_timeout="
                    "{timeout}s, so every connection of this process waits; it is blocked "
                    "in:\n{stack}Move blocking or CPU-heavy work to task workers "
                    "(server.task(), task_worker_num) or to a thread (deferToThread).",
                    who=self.who, timeout=self.timeout, stack=stack,
                )  # fmt: skip
