"""``worker_num = 0``: the app served by the twistd process itself.

With a pid file, ``PIDFILE.status.json`` is kept current as the master keeps it (one worker:
this process), so ``python -m tx_swoole status`` works; there is no reload (the master's
SIGUSR1 is twistd's log rotation here), and ``python -m tx_swoole reload`` says so.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import task

from tx_swoole._log import SwooleLogger
from tx_swoole.config import ServerConfig
from tx_swoole.process._lifecycle import (
    BOOT_ERROR_EXIT,
    call_at_start,
    exit_after_shutdown,
    install_signals,
    shutdown_handlers,
    write_status,
)
from tx_swoole.process.worker import AppService
from tx_swoole.reactor import IServerReactor, default_reactor

log = SwooleLogger("tx_swoole.inprocess")
STATUS_EVERY = 1.0  # seconds between status file writes


class InProcessServer(MultiService):
    """``worker_num = 0``: the app served by the twistd process itself."""

    def __init__(
        self,
        config: ServerConfig,
        reactor: IServerReactor | None = None,
        pidfile: str | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            reactor = default_reactor()
        self.reactor = reactor
        self.app = AppService(config, reactor=reactor)
        self.app.setServiceParent(self)
        self.statusPath = os.path.abspath(pidfile) + ".status.json" if pidfile else None
        self._writer: task.LoopingCall | None = None
        self._startedAt = 0.0

    def startService(self) -> None:
        super().startService()
        self._startedAt = self.reactor.seconds()
        self.app.ready.addErrback(self._bootFailed)
        call_at_start(self.reactor, install_signals, self.reactor, self.signalHandlers())
        if self.statusPath:
            self._writer = task.LoopingCall(self.writeStatus)
            self._writer.clock = self.reactor
            self._writer.start(STATUS_EVERY)

    def signalHandlers(self) -> dict[int, Any]:
        """TERM and INT: graceful shutdown."""
        return shutdown_handlers(self.reactor)

    def stopService(self) -> Any:
        if self._writer is not None and self._writer.running:
            self._writer.stop()
        if self.statusPath and os.path.exists(self.statusPath):
            os.unlink(self.statusPath)
        return super().stopService()

    def status(self) -> dict[str, Any]:
        """The master's status shape: this process is the master and its only worker."""
        age = round(self.reactor.seconds() - self._startedAt, 3)
        app = self.app
        serving = bool(app.listening) and app.listening[-1].port is not None
        return {
            "master": {
                "pid": os.getpid(), "generation": 1, "uptime": age, "worker_num": 0,
                "reloading": False, "in_process": True,
            },
            "workers": [
                {"id": 0, "pid": os.getpid(), "generation": 1,
                 "state": "serving" if serving else "starting", "age": age,
                 "connections": app.connectionCount, "requests": app.requests}
            ],
        }  # fmt: skip

    def writeStatus(self) -> None:
        assert self.statusPath is not None
        write_status(self.statusPath, self.status())

    def _bootFailed(self, failure: Any) -> None:
        log.failure("the app cannot start; exiting", failure)
        exit_after_shutdown(BOOT_ERROR_EXIT)
        self.reactor.callWhenRunning(self.reactor.stop)
