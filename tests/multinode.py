"""Several hosts on this machine for the multi-node test: network namespaces joined by a bridge
(veth pairs; the addresses exist inside the namespaces only), a Redis Cluster primary in each
node's namespace, a ``twistd swoole`` node per namespace, HAProxy in its own, and the load in
a client namespace.  Needs root (``ip netns``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.redis_cluster import wait_until
from tests.support import Twistd, write_config

HERE = Path(__file__).resolve().parent


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Hosts:
    """Namespaces ``NAME`` with addresses 10.X.0.N/24 on one bridge (in a hub namespace)."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"t{os.getpid() % 100000}"
        self.net = f"10.{random.randrange(100, 250)}.{random.randrange(0, 250)}"
        self.hub = f"{self.tag}hub"
        self.names = names
        self.address: dict[str, str] = {n: f"{self.net}.{10 + i}" for i, n in enumerate(names)}
        self.made: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.tag}{name}"

    def up(self) -> None:
        ip("netns", "add", self.hub)
        self.made.append(self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            ns, a, b = self.ns(name), f"{self.tag}{i}a", f"{self.tag}{i}b"
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("link", "add", a, "type", "veth", "peer", "name", b)
            ip("link", "set", a, "netns", self.hub)
            ip("link", "set", b, "netns", ns)
            ip("-n", self.hub, "link", "set", a, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", b)
            ip("-n", ns, "link", "set", b, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def run(self, name: str) -> tuple[str, ...]:
        """The prefix that runs a command inside ``name``'s namespace."""
        return ("ip", "netns", "exec", self.ns(name))

    def down(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []


HAPROXY = """
global
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout
frontend web
    bind {lb}:80
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /health
    http-reuse safe
{servers}
"""


class Cluster:
    """3 nodes (2 workers each) + a 3-primary Redis Cluster + HAProxy + a client namespace."""

    def __init__(self, tmp: Path, nodes: int = 3, workers: int = 2,
                 pin: tuple[str, str] | None = None) -> None:  # fmt: skip
        """``pin``: (CPUs for the nodes, CPUs for HAProxy), as ``taskset -c`` takes them."""
        self.tmp = tmp
        self.workers = workers
        self.pin = pin
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        self.hosts = Hosts([*self.nodes, "lb", "client"])
        self.redis: dict[str, subprocess.Popen[bytes]] = {}
        self.servers: dict[str, Twistd] = {}
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.load: subprocess.Popen[bytes] | None = None
        self.stats_path = tmp / "stats.json"
        self.stop_path = tmp / "stop"

    def start(self) -> None:
        self.hosts.up()
        self._redis()
        for n in self.nodes:
            self.start_node(n)
        self._haproxy()

    def _redis(self) -> None:
        """Three Redis Cluster primaries, spread over the nodes' namespaces."""
        seeds, where = [], []
        for i in range(3):
            n = self.nodes[i % len(self.nodes)]
            d = self.tmp / f"redis-{i}"
            d.mkdir()
            host, port = self.hosts.address[n], str(7000 + i)
            self.redis[f"{n}:{port}"] = subprocess.Popen(
                [*self.hosts.run(n), "redis-server", "--port", port, "--bind", host,
                 "--save", "", "--appendonly", "no", "--dir", str(d), "--cluster-enabled",
                 "yes", "--protected-mode", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            seeds.append(f"{host}:{port}")
            where.append(n)
        for n, seed in zip(where, seeds, strict=True):
            wait_until(lambda n=n, seed=seed: self._cli(n, seed, "PING") == "PONG", 15,
                       what=f"redis {seed}")  # fmt: skip
        out = subprocess.run([*self.hosts.run(where[0]), "redis-cli", "--cluster",
                              "create", *seeds, "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: all("cluster_state:ok" in self._cli(n, s, "CLUSTER", "INFO")
                               for n, s in zip(where, seeds, strict=True)),
                   30, 0.1, "the Redis Cluster")  # fmt: skip
        self.seeds = ",".join(seeds)

    def _cli(self, node: str, seed: str, *command: str) -> str:
        host, port = seed.rsplit(":", 1)
        out = subprocess.run([*self.hosts.run(node), "redis-cli", "-h", host, "-p", port,
                              *command], capture_output=True, text=True, timeout=10)  # fmt: skip
        return out.stdout.strip()

    def start_node(self, n: str) -> Twistd:
        config = write_config(
            self.tmp,
            {"type": "websocket", "host": self.hosts.address[n], "port": 8000,
             "app": "tests.multinode_app:Chat", "http_app": "tests.multinode_app:http"},
            {"worker_num": self.workers, "open_proxy_protocol": True, "max_wait_time": 10},
            {"worker_start": "tests.multinode_app:on_worker_start",
             "worker_stop": "tests.multinode_app:on_worker_stop"},
            name=f"{n}.toml",
        )  # fmt: skip
        t = Twistd(config, f"--pidfile={self.tmp / n}.pid", cwd=HERE.parent,
                   env={"TX_SWOOLE_NODE": n, "REDIS_CLUSTER": self.seeds,
                        "PYTHONPATH": str(HERE.parent)},
                   prefix=(*self.hosts.run(n), *self._taskset(0)))  # fmt: skip
        t.wait_for(rb"generation 1\) ready", 30, count=self.workers)
        self.servers[n] = t
        return t

    def _haproxy(self) -> None:
        servers = "\n".join(
            f"    server {n} {self.hosts.address[n]}:8000 send-proxy-v2 check check-send-proxy "
            "inter 200ms fall 2 rise 2"
            for n in self.nodes
        )
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(HAPROXY.format(lb=self.hosts.address["lb"], servers=servers))
        command = [*self.hosts.run("lb"), *self._taskset(1), "haproxy", "-db", "-f", str(cfg)]
        self.haproxy = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip

    def _taskset(self, which: int) -> tuple[str, ...]:
        return ("taskset", "-c", self.pin[which]) if self.pin else ()

    def start_load(self, http_conns: int, ws_clients: int) -> None:
        self.load = subprocess.Popen(
            [*self.hosts.run("client"), sys.executable, str(HERE / "multinode_load.py"),
             self.hosts.address["lb"], "80", str(http_conns), str(ws_clients),
             str(self.stats_path), str(self.stop_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {"ok": 0, "fail": 0, "errors": [], "nodes": {}, "peers": {}, "ws": {}}

    def stop(self) -> None:
        self.stop_path.touch()
        if self.load is not None:
            try:
                self.load.wait(20)
            except subprocess.TimeoutExpired:
                self.load.kill()
        for t in self.servers.values():
            if t.proc.poll() is None:
                t.stop()
        for p in [*self.redis.values(), *([self.haproxy] if self.haproxy else [])]:
            p.kill()
            p.wait()
        self.hosts.down()

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        wait_until(predicate, timeout, 0.1, what)

    def kill_node(self, n: str) -> None:
        import signal

        t = self.servers[n]
        os.killpg(t.proc.pid, signal.SIGKILL)
        t.proc.wait()
