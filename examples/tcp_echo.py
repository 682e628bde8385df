"""Echo server: every byte a client sends comes straight back.

Run it with ``twistd -n swoole -c examples/tcp_echo.toml`` and try ``nc 127.0.0.1 9502``.
"""

from typing import Any

from tx_swoole.protocols.tcp import TCPProtocol


class Echo(TCPProtocol):
    """Sends each chunk it receives back to the same connection."""

    def messageReceived(self, data: bytes) -> None:
        self.send(data)


def on_worker_exit(server: Any, worker_id: int) -> None:
    """``[events] worker_exit``: while this worker drains, say goodbye and close our
    connections (otherwise they are aborted at max_wait_time)."""
    for conn_id in server.factory.listConnections():
        server.factory.send(conn_id, b"bye\n")
        server.factory.close(conn_id)
