"""twistd plugin: ``twistd swoole -c CONFIG.toml``."""

from twisted.application.service import ServiceMaker

swoole = ServiceMaker(
    "tx_swoole",
    "tx_swoole.tap",
    "Swoole's server model: long-lived TCP, HTTP/1.1, worker processes with graceful reload.",
    "swoole",
)
