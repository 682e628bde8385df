"""Load for the multi-node test, run inside the client namespace: keep-alive HTTP GETs and
WebSocket chat members through HAProxy, reconnecting when a node goes away.

``python multinode_load.py HOST PORT HTTP_CONNS WS_CLIENTS STATS STOP``: writes its counts to
the JSON file STATS every 0.1 s until the file STOP exists.  Member ``w0`` says ``tick N``
every 0.2 s; every member records the last tick it heard (the room crosses nodes).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time

from websockets.sync.client import connect

HOST, PORT = sys.argv[1], int(sys.argv[2])
HTTP_CONNS, WS_CLIENTS = int(sys.argv[3]), int(sys.argv[4])
STATS, STOP = sys.argv[5], sys.argv[6]
lock = threading.Lock()
stats: dict = {"ok": 0, "fail": 0, "errors": [], "nodes": {}, "peers": {}, "ws": {}}


def stopped() -> bool:
    return os.path.exists(STOP)


def http_worker() -> None:
    conn = None
    while not stopped():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
            conn.request("GET", "/")
            r = conn.getresponse()
            body = r.read().decode()
            if r.status != 200:
                raise RuntimeError(f"status {r.status}: {body[:80]}")
            node, peer = body.split()
            with lock:
                stats["ok"] += 1
                stats["nodes"][node] = stats["nodes"].get(node, 0) + 1
                stats["peers"][peer] = stats["peers"].get(peer, 0) + 1
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is counted
            with lock:
                stats["fail"] += 1
                stats["errors"] = [*stats["errors"][-19:], f"{type(e).__name__}: {e}"]
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)


def ws_worker(n: int) -> None:
    name = f"w{n}"
    me = stats["ws"][name]
    tick = 0
    while not stopped():
        try:
            with connect(f"ws://{HOST}:{PORT}/chat?name={name}", open_timeout=5) as ws:
                me["connects"] += 1
                next_tick = time.monotonic()
                while not stopped():
                    if n == 0 and time.monotonic() >= next_tick:
                        tick += 1
                        ws.send(f"tick {tick}")
                        next_tick = time.monotonic() + 0.2
                    try:
                        message = ws.recv(timeout=0.1)
                    except TimeoutError:
                        continue
                    if message.startswith(f"* {name} joined ("):
                        me["node"] = message.rsplit("(", 1)[1].rstrip(")")
                        me["nodes"].append(me["node"])
                    elif message.startswith("w0: tick "):
                        me["tick"] = max(me["tick"], int(message.rsplit(" ", 1)[1]))
        except Exception:  # noqa: BLE001 - closed by a dying node: connect again
            me["node"] = None
            time.sleep(0.1)


def main() -> None:
    for n in range(WS_CLIENTS):
        stats["ws"][f"w{n}"] = {"node": None, "connects": 0, "tick": -1, "nodes": []}
    threads = [threading.Thread(target=http_worker, daemon=True) for _ in range(HTTP_CONNS)]
    threads += [threading.Thread(target=ws_worker, args=(n,), daemon=True)
                for n in range(WS_CLIENTS)]  # fmt: skip
    for t in threads:
        t.start()
    while not stopped():
        with lock:
            data = json.dumps(stats)
        with open(STATS + ".tmp", "w") as f:
            f.write(data)
        os.replace(STATS + ".tmp", STATS)
        time.sleep(0.1)
    for t in threads:
        t.join(10)


if __name__ == "__main__":
    main()
