"""Long connections across reloads with ``reload_handoff = true``: TCP (line-framed) and
WebSocket clients each send a numbered message every PERIOD seconds and check every echo.

``python bench/handoff.py [TCP] [WS] [RELOADS] [PERIOD]`` (default 1000 1000 3 0.1) starts
``twistd swoole`` with one worker (``tests/handoff_app.py``), reloads it RELOADS times
(SIGUSR1, each once the one before has handed its connections over), then a run with
``max_request`` recycling; prints disconnects, lost and out-of-order echoes, the workers each
client was served by, the longest pause between two echoes of one client, and the hand-off
time per connection from the workers' log.  :func:`drive` is what the tests use.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support import Twistd  # noqa: E402

CONFIG = """
[server]
type = "tcp"
host = "127.0.0.1"
port = 0
app = "handoff_app:Echo"

[settings]
worker_num = {workers}
reload_handoff = true
open_eof_split = true
package_eof = "\\n"
max_wait_time = {wait}
max_conn = 20000
{extra}

[[listen]]
type = "websocket"
host = "127.0.0.1"
port = 0
app = "handoff_app:WsEcho"
"""


@dataclass
class Stats:
    sent: int = 0
    echoed: int = 0
    disconnects: int = 0
    wrong: list[str] = field(default_factory=list)  # lost, reordered or state lost
    pids: list[set[str]] = field(default_factory=list)  # per client: the workers it met
    gaps: list[float] = field(default_factory=list)  # per client: the longest pause


class _Client:
    def __init__(self, stats: Stats, name: str) -> None:
        self.stats, self.name = stats, name
        self.expected = 0
        self.pids: set[str] = set()
        self.last = time.monotonic()
        self.gap = 0.0
        stats.pids.append(self.pids)

    def check(self, line: str) -> None:
        seq, count, pid = line.split()
        now = time.monotonic()
        self.gap = max(self.gap, now - self.last)
        self.last = now
        want = f"{self.name}:{self.expected}"
        self.expected += 1
        self.stats.echoed += 1
        self.pids.add(pid)
        if seq != want or int(count) != self.expected:  # (count: the app state carried over)
            self.stats.wrong.append(f"{want}: got {line!r}")


async def _tcp(port: int, name: str, stats: Stats, period: float, stop: asyncio.Event) -> None:
    client = _Client(stats, name)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def read() -> None:
        while True:
            try:
                line = await reader.readline()
            except ConnectionError:  # reset: closed all the same
                return
            if not line:
                return
            client.check(line.decode())

    task = asyncio.ensure_future(read())
    n = 0
    while not stop.is_set() and not task.done():
        writer.write(f"{name}:{n}\n".encode())
        n += 1
        stats.sent += 1
        await asyncio.sleep(period)
    await _settle(client, n, task)
    writer.close()
    stats.gaps.append(client.gap)


async def _ws(port: int, name: str, stats: Stats, period: float, stop: asyncio.Event) -> None:
    client = _Client(stats, name)
    async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None,
                                  ping_interval=None, max_queue=None) as ws:  # fmt: skip

        async def read() -> None:
            try:
                async for message in ws:
                    client.check(str(message))
            except websockets.ConnectionClosed:
                return

        task = asyncio.ensure_future(read())
        n = 0
        while not stop.is_set() and not task.done():
            try:
                await ws.send(f"{name}:{n}")
            except websockets.ConnectionClosed:
                break
            n += 1
            stats.sent += 1
            await asyncio.sleep(period)
        await _settle(client, n, task)
    stats.gaps.append(client.gap)


async def _settle(client: _Client, n: int, task: asyncio.Future[Any]) -> None:
    """Wait for the echoes still due; a connection that ended before counts as a disconnect."""
    deadline = time.monotonic() + 10
    while client.expected < n and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if task.done():
        client.stats.disconnects += 1
    else:
        task.cancel()
        if client.expected < n:  # neither answered nor closed: lost silently
            client.stats.wrong.append(f"{client.name}: {n - client.expected} echoes never came")


async def drive(tcp_port: int, ws_port: int, tcp: int, ws: int, period: float,
                during: Any) -> Stats:  # fmt: skip
    """Open ``tcp`` + ``ws`` clients (spread over ``period``), run ``during()`` (blocking, in
    a thread) while they talk, then stop them and collect what they saw."""
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    clients = []
    for i in range(max(tcp, ws)):
        if i < tcp:
            clients.append(asyncio.ensure_future(_tcp(tcp_port, f"t{i}", stats, period, stop)))
        if i < ws:
            clients.append(asyncio.ensure_future(_ws(ws_port, f"w{i}", stats, period, stop)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await loop.run_in_executor(None, during)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    return stats


def ports(server: Twistd) -> tuple[int, int]:
    found = server.wait_for(rb"serving (\w+) app \S+ on [\d.]+:(\d+)", count=2)
    kinds = {m.group(1).decode(): int(m.group(2)) for m in found}
    return kinds["tcp"], kinds["websocket"]


def reloads(server: Twistd, count: int) -> list[float]:
    """``count`` SIGUSR1 reloads, each once the one before has handed off; the seconds each
    hand-off took."""
    took = []
    for k in range(1, count + 1):
        t = time.monotonic()
        server.signal(signal.SIGUSR1)
        server.wait_for(rb"connections handed to the replacement", timeout=60, count=k)
        took.append(time.monotonic() - t)
    return took


def main() -> None:
    tcp = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ws = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    period = float(sys.argv[4]) if len(sys.argv) > 4 else 0.1
    for title, extra in (("reloads", ""), ("max_request recycling", "max_request = {n}")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "handoff.toml"
            n = (tcp + ws) * int(4 / period)  # recycled about every 4 s of traffic
            cfg.write_text(CONFIG.format(wait=30, extra=extra.format(n=n), workers=1))
            os.environ["PYTHONPATH"] = str(ROOT / "tests")
            with Twistd(cfg, cwd=ROOT / "tests") as server:
                tcp_port, ws_port = ports(server)

                def during(server: Twistd = server, recycle: bool = bool(extra)) -> None:
                    if recycle:
                        server.wait_for(rb"connections handed to the replacement",
                                        timeout=120, count=count)  # fmt: skip
                    else:
                        reloads(server, count)

                t = time.monotonic()
                stats = asyncio.run(drive(tcp_port, ws_port, tcp, ws, period, during))
                took = time.monotonic() - t
                lines = re.findall(rb"(\d+) connections handed to the replacement, (\d+) drain",
                                   bytes(server.output))  # fmt: skip
                moved = [int(a) for a, _ in lines]
                print(
                    f"{title}: {tcp} TCP + {ws} WebSocket clients, {took:.0f} s, "
                    f"{len(lines)} hand-offs of {moved} connections"
                )
                print(
                    f"  sent {stats.sent}, echoed {stats.echoed}, disconnects "
                    f"{stats.disconnects}, lost or out of order {len(stats.wrong)}"
                )
                print(
                    f"  workers met per client: median {statistics.median(map(len, stats.pids))}"
                    f", longest pause between echoes {max(stats.gaps):.3f} s (median of the "
                    f"clients' longest {statistics.median(stats.gaps):.3f} s)"
                )
                times = re.findall(rb"handed off in ([\d.]+) s", bytes(server.output))
                if times:
                    per = [float(x) / max(m, 1) * 1e3 for x, m in zip(times, moved, strict=False)]
                    print(f"  hand-off time per connection: {statistics.median(per):.3f} ms")


if __name__ == "__main__":
    main()
