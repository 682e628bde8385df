"""tx_swoole: Swoole's server model on Twisted.

Long-lived TCP connections with heartbeat and keepalive, an HTTP/1.1 server with hard limits,
async Redis clients, and a multi-process server run by ``twistd swoole -c config.toml``.
"""

from tx_swoole.errors import ConfigError, SwooleError
from tx_swoole.settings import Settings, make_settings

__version__ = "0.1.0"
__all__ = ["ConfigError", "Settings", "SwooleError", "__version__", "make_settings"]
