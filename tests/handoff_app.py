"""Echo apps for the reload_handoff tests: each answer carries the sequence number sent, the
connection's own count of messages (app state that must survive a hand-off) and the pid of
the worker that answered."""

from __future__ import annotations

import os
from typing import Any

from tx_swoole.protocols.tcp import TCPProtocol
from tx_swoole.protocols.websocket import WebSocketProtocol


class Counted:
    count = 0

    def answer(self, text: str) -> str:
        self.count += 1
        return f"{text} {self.count} {os.getpid()}"

    def connectionHandoff(self) -> Any:
        return {"count": self.count}

    def connectionAdopted(self, state: Any) -> None:
        self.count = state["count"]
        crash = os.environ.get("HANDOFF_CRASH_MARK")  # the first adopter dies, once
        if crash and not os.path.exists(crash):
            open(crash, "w").close()
            os._exit(3)


class Echo(Counted, TCPProtocol):
    stay = False  # set by a message "stay": this connection refuses to move

    def messageReceived(self, data: bytes) -> None:
        text = data.decode().strip()
        self.stay = self.stay or text == "stay"
        if text == "whoami":
            self.send(f"{self.connId} {os.getpid()}\n".encode())
            return
        if text.startswith("to "):  # "to ID TEXT": TEXT to connection ID, held by any worker
            _, connId, rest = text.split(" ", 2)
            self.server.send(int(connId), f"{rest} from {self.connId}\n".encode())
            return
        self.send(self.answer(text).encode() + b"\n")

    def canHandOff(self) -> bool:
        return not self.stay

    def connectionClosed(self, reason: str) -> None:
        print(f"connection {self.connId} closed: {reason}", flush=True)


class WsEcho(Counted, WebSocketProtocol):
    def messageReceived(self, message: str | bytes) -> None:
        self.send(self.answer(str(message)))

    def connectionClosed(self, code: int, reason: str) -> None:
        print(f"websocket {self.connId} closed: {code} {reason}", flush=True)
