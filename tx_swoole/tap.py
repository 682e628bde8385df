"""``twistd swoole``: command-line options and the service tree.

``twistd -n swoole -c FILE`` reads and validates the config file in ``postOptions`` (a bad file
is a usage error: twistd exits non-zero before anything binds).  With ``worker_num = 0`` the
app runs inside the twistd process; otherwise the twistd process is the master of
``worker_num`` worker processes.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from tx_swoole._log import SwooleLogger
from tx_swoole.config import ServerConfig, load_config
from tx_swoole.errors import ConfigError
from tx_swoole.reactor import install_unless_chosen

log = SwooleLogger("tx_swoole.tap")
BOOT_ERROR_EXIT = 3  # like gunicorn's WORKER_BOOT_ERROR: the app cannot start


class Options(usage.Options):
    """Options of ``twistd swoole``."""

    synopsis = "[twistd options] swoole -c CONFIG.toml"
    longdesc = (
        "Run a tx_swoole server described by a TOML config file ([server], [settings], "
        "[events]). Signals to the master: USR1 reloads the workers gracefully, TERM or INT "
        "shuts down gracefully. See also: python -m tx_swoole status|reload|stop --pidfile FILE."
    )
    optParameters = [
        ["config", "c", None, "Path of the TOML config file (required)."],
    ]

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            raise usage.UsageError("missing -c/--config FILE: the TOML config file to serve")
        try:
            self["server_config"] = load_config(path)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def exit_after_shutdown(code: int) -> None:
    """Make the process exit with ``code`` once twistd has cleaned up (pid file removed)."""

    def _exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(_exit)


def install_signals(reactor: Any, handlers: dict[int, Callable[[], Any]]) -> None:
    """Route signals to ``handlers`` (run in the reactor thread); ignore SIGPIPE.

    TERM and INT stop the reactor gracefully and the process exits 0, instead of twistd's
    re-raising of the signal at exit.  Call once the reactor runs (it installs its own first).
    """
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for sig, handler in handlers.items():
        signal.signal(sig, _deliver(reactor, handler))


def _deliver(reactor: Any, handler: Callable[[], Any]) -> Callable[[int, Any], None]:
    def on_signal(_sig: int, _frame: Any) -> None:
        reactor.callFromThread(handler)

    return on_signal


def shutdown_handlers(reactor: Any) -> dict[int, Callable[[], Any]]:
    """TERM and INT: graceful shutdown through ``reactor.stop`` (services drain first)."""

    def stop() -> None:
        if reactor.running:
            log.info("shutdown requested: draining")
            reactor.stop()

    return {signal.SIGTERM: stop, signal.SIGINT: stop}


class InProcessServer(MultiService):
    """``worker_num = 0``: the app served by the twistd process itself."""

    def __init__(self, config: ServerConfig, reactor: Any = None) -> None:
        from tx_swoole.process.worker import AppService

        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.app = AppService(config, reactor=reactor)
        self.app.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.app.ready.addErrback(self._bootFailed)
        self.reactor.callWhenRunning(install_signals, self.reactor, shutdown_handlers(self.reactor))

    def _bootFailed(self, failure: Any) -> None:
        log.failure("the app cannot start; exiting", failure)
        exit_after_shutdown(BOOT_ERROR_EXIT)
        self.reactor.callWhenRunning(self.reactor.stop)


def makeService(options: Options) -> IService:
    """The service tree for the options: in-process server or master."""
    install_unless_chosen()  # twistd installs its default only when the service is built
    config: ServerConfig = options["server_config"]
    if config.settings.worker_num == 0:
        return InProcessServer(config)
    from tx_swoole.process.master import MasterService

    parent: Any = options.parent or {}
    master: IService = MasterService(
        config, pidfile=parent.get("pidfile"), reactor_name=parent.get("reactor")
    )
    return master
