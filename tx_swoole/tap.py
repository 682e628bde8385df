"""``twistd swoole``: command-line options and the service tree.

``twistd -n swoole -c FILE`` reads and validates the config file in ``postOptions`` (a bad file
is a usage error: twistd exits non-zero before anything binds).  With ``worker_num = 0`` the
app runs inside the twistd process; otherwise the twistd process is the master of
``worker_num`` worker processes.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from tx_swoole.config import ServerConfig, load_config
from tx_swoole.errors import ConfigError
from tx_swoole.process._lifecycle import hold_signals
from tx_swoole.reactor import install_unless_chosen


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


def makeService(options: Options) -> IService:
    """The service tree for the options: in-process server or master."""
    install_unless_chosen()  # twistd installs its default only when the service is built
    config: ServerConfig = options["server_config"]
    parent: Any = options.parent or {}
    if config.settings.worker_num == 0:
        from tx_swoole.process.inprocess import InProcessServer

        server = InProcessServer(config, pidfile=parent.get("pidfile"))
        hold_signals(server.reactor, server.signalHandlers())  # until twistd's reactor runs
        return server
    from tx_swoole.process.master import MasterService

    master = MasterService(
        config, pidfile=parent.get("pidfile"), reactor_name=parent.get("reactor")
    )
    hold_signals(master.reactor, master.signalHandlers())
    return master
