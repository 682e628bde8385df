"""The WebSocket echo the benchmarks load: ``twistd -n swoole -c bench/ws_echo.toml``."""

from __future__ import annotations

from tx_swoole.protocols.websocket import WebSocketProtocol


class Echo(WebSocketProtocol):
    def messageReceived(self, message: str | bytes) -> None:
        self.send(message)
