"""Many WebSocket connections: memory per idle connection, the CPU cost of server pings, and
the time a broadcast takes to reach everyone; ours against ``websockets`` in the same run.

``python bench/ws_scale.py [N] [IDLE_SECONDS]`` starts each server in its own process (ours:
``twistd swoole`` with ``websocket_ping_interval`` = IDLE_SECONDS / 4; websockets: its
``serve`` with ``ping_interval`` the same, ``broadcast()`` for the broadcast, run with
``../shared/peers``' venv), opens N connections from this process (raw sockets that answer
pings), and prints RSS per connection, CPU % over IDLE_SECONDS, the CPU % that pings every
30 s would cost, and the broadcast time (first byte sent to last client served).
"""

from __future__ import annotations

import base64
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from idle_connections import cpu_seconds, free_port, rss_kb  # noqa: E402

from tx_swoole.protocols._websocket import TEXT, WebSocketConnection, masked_frame  # noqa: E402

PEER_PYTHON = "/tmp/peers-venv/bin/python"
PEER = """
import asyncio, sys, websockets
async def handler(ws):
    async for m in ws:
        if isinstance(m, str) and m.startswith("broadcast:"):
            websockets.broadcast(server.connections, m[10:])
async def main():
    global server
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None,
                                ping_interval=float(sys.argv[2])) as server:
        print("ready", flush=True)
        await asyncio.Future()
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
asyncio.run(main())
"""
OURS = """
from tx_swoole.protocols.websocket import WebSocketProtocol
class Room(WebSocketProtocol):
    def messageReceived(self, message):
        if isinstance(message, str) and message.startswith("broadcast:"):
            self.server.broadcast(message[10:])
"""


def start(kind: str, port: int, ping: float, tmp: str) -> subprocess.Popen[str]:
    if kind == "websockets":
        script = os.path.join(tmp, "peer.py")
        with open(script, "w") as f:
            f.write(PEER)
        return subprocess.Popen([PEER_PYTHON, script, str(port), str(ping)],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    with open(os.path.join(tmp, "room.py"), "w") as f:
        f.write(OURS)
    cfg = os.path.join(tmp, "room.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\ntype = "websocket"\nport = {port}\napp = "room:Room"\n'
                f'[settings]\nworker_num = 0\nmax_conn = 100000\nlog_level = "warning"\n'
                f"websocket_ping_interval = {ping}\n")  # fmt: skip
    return subprocess.Popen(["twistd", "--pidfile=", "-n", "swoole", "-c", cfg], cwd=tmp,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def open_many(port: int, n: int) -> list[socket.socket]:
    socks = []
    request = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
               + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")  # fmt: skip
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        s.setblocking(False)
        socks.append(s)
    return socks


def serve_clients(socks: list[socket.socket], seconds: float, wanted: bytes = b"") -> float:
    """Answer pings for ``seconds``; with ``wanted``, return when every socket got it."""
    sel = selectors.DefaultSelector()
    peers = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        peers[s] = WebSocketConnection(client_side=True, max_message=1 << 20)
    waiting = set(socks) if wanted else set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (waiting or not wanted):
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            for event in peers[s].receive(data):
                if type(event).__name__ == "Send":  # a pong for the server's ping
                    s.sendall(event.data)  # type: ignore[union-attr]
                elif event == wanted.decode():
                    waiting.discard(s)
    sel.close()
    return time.monotonic()


def measure(kind: str, n: int, idle: float) -> dict[str, float]:
    ping = idle / 4
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(kind, port, ping, tmp)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(0.5)
            base = rss_kb(server.pid)
            socks = open_many(port, n)
            serve_clients(socks, 2.0)
            per_conn = (rss_kb(server.pid) - base) * 1024 / n
            c0, t0 = cpu_seconds(server.pid), time.monotonic()
            serve_clients(socks, idle)
            cpu = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0) * 100
            sent = time.monotonic()
            socks[0].setblocking(True)
            socks[0].sendall(masked_frame(TEXT, b"broadcast:hello everyone"))
            socks[0].setblocking(False)
            done = serve_clients(socks, 60.0, b"hello everyone")
            for s in socks:
                s.close()
            return {"rss": per_conn, "cpu": cpu, "cpu30": cpu * ping / 30,
                    "broadcast": done - sent}  # fmt: skip
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kinds = ["ours"] + (["websockets"] if os.path.exists(PEER_PYTHON) else [])
    results = {}
    for kind in kinds:
        r = results[kind] = measure(kind, n, idle)
        print(f"{kind:10s} {n} connections: {r['rss']:6.0f} B RSS each; pings every "
              f"{idle / 4:g}s: {r['cpu']:.2f}% CPU (every 30 s: {r['cpu30']:.3f}%); "
              f"broadcast to all: {r['broadcast'] * 1000:.0f} ms")  # fmt: skip
    if "websockets" in results:
        o, w = results["ours"], results["websockets"]
        print(f"ratio ours / websockets: memory {o['rss'] / w['rss']:.2f}, broadcast time "
              f"{o['broadcast'] / w['broadcast']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
