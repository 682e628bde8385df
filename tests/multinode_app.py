"""The app each node of the multi-node test serves: ``examples/ws_chat_nodes`` (a chat room
across nodes over a Redis Cluster) plus plain HTTP: ``/health`` for HAProxy's checks, and any
other path answers ``NODE CLIENT_HOST`` (the client as the PROXY header named it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import ws_chat_nodes  # noqa: E402

from tx_swoole.protocols.http import Request, Response  # noqa: E402

Chat = ws_chat_nodes.Chat
on_worker_start = ws_chat_nodes.on_worker_start
on_worker_stop = ws_chat_nodes.on_worker_stop
NODE = os.environ.get("TX_SWOOLE_NODE", "?")


def http(request: Request, response: Response) -> Any:
    if request.path == "/health":
        return response.end("ok")
    return response.end(f"{NODE} {request.remote_addr[0]}")
