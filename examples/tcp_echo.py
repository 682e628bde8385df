"""Echo server: every byte a client sends comes straight back.

Run it with ``twistd -n swoole -c examples/tcp_echo.toml`` and try ``nc 127.0.0.1 9502``.
"""

from tx_swoole.protocols.tcp import TCPProtocol


class Echo(TCPProtocol):
    """Sends each chunk it receives back to the same connection."""

    def messageReceived(self, data: bytes) -> None:
        self.send(data)
