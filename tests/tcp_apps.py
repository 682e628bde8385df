"""TCP apps and hooks that the worker-lifecycle tests serve under ``twistd swoole``."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from tx_swoole.protocols.tcp import TCPProtocol

log = Logger("tests.tcp_apps")


class Tracked(TCPProtocol):
    """Echoes, and logs each connection's close reason."""

    def messageReceived(self, data: bytes) -> None:
        if data == b"cert?":  # over TLS: the client certificate getClientInfo reports
            info = self.server.getClientInfo(self.connId)
            self.send(b"cert: " + (info.ssl_client_cert or "none").encode()[:27])
            return
        self.send(data)

    def connectionClosed(self, reason: str) -> None:
        log.info("app saw close of {connId}: {reason}", connId=self.connId, reason=reason)


def on_worker_exit(server: Any, worker_id: int) -> None:
    log.info("app worker_exit called")


def on_worker_stop(server: Any, worker_id: int) -> None:
    log.info("app worker_stop called")


class SilentOrBig(TCPProtocol):
    """Length-framed (``N``): echoes, answers ``big`` with a frame of 100 KB, and ``silent...``
    and pings not at all; logs each ping it swallows."""

    def messageReceived(self, data: bytes) -> None:
        body = data[4:]
        if body.startswith(b"silent"):
            return
        if body == b"ping":
            log.info("app swallowed a ping")
            return
        if body == b"big":
            self.send(b"\x00\x01\x86\xa0" + b"x" * 100_000)
            return
        self.send(data)
