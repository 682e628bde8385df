"""A chat room over WebSocket, with its page served by the same server.

``twistd -n swoole -c examples/ws_chat.toml``, then open http://127.0.0.1:9503/?name=alice
in two browser tabs.  Every message goes to everyone in the room (``broadcast`` encodes it
once), joins and leaves included.
"""

from __future__ import annotations

import html
import json

from tx_swoole.protocols.http import Request, Response
from tx_swoole.protocols.websocket import WebSocketProtocol

MAX_TEXT = 1000  # characters of one chat line

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tx_swoole chat</title></head>
<body>
<h1>Chat as <span id="me">%(name)s</span></h1>
<ul id="log"></ul>
<form id="say"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<script>
const log = document.getElementById("log");
const ws = new WebSocket(`ws://${location.host}/chat?name=${encodeURIComponent(%(js_name)s)}`);
ws.onopen = () => document.body.dataset.state = "open";
ws.onclose = () => document.body.dataset.state = "closed";
ws.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  log.appendChild(item);
};
document.getElementById("say").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (text.value && ws.readyState === WebSocket.OPEN) ws.send(text.value);
  text.value = "";
};
</script>
</body></html>
"""


class Chat(WebSocketProtocol):
    """One member of the room."""

    def connectionOpened(self, request: Request) -> None:
        self.name = (request.arg("name") or f"guest{self.connId}")[:40]
        self.server.broadcast(f"* {self.name} joined")

    def messageReceived(self, message: str | bytes) -> None:
        if isinstance(message, str) and message.strip():
            self.server.broadcast(f"{self.name}: {message[:MAX_TEXT]}")

    def connectionClosed(self, code: int, reason: str) -> None:
        if hasattr(self, "name"):
            self.server.broadcast(f"* {self.name} left")


def page(request: Request, response: Response) -> None:
    """The chat page (plain HTTP on the same port)."""
    name = (request.arg("name") or "guest")[:40]
    response.header("Content-Type", "text/html; charset=utf-8")
    js_name = json.dumps(name).replace("<", "\\u003c")  # a JS string that cannot end the script
    response.end(PAGE % {"name": html.escape(name), "js_name": js_name})
