"""A private Redis Cluster for the tests: 3 primaries and 3 replicas on free ports in a temp
directory, made with ``redis-cli --cluster create``, which tests may fail over and kill."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, below the ephemeral
    range so that neither is handed out to a client meanwhile."""
    while True:
        port = random.randrange(12000, 22000)
        if port not in taken and port + 10000 not in taken and _free(port) and _free(port + 10000):
            taken.update((port, port + 10000))
            return port


def _ask(port: int, *command: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True,
                         text=True, timeout=10)  # fmt: skip
    return out.stdout


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class RedisClusterServers:
    """``redis-server --cluster-enabled yes`` × (primaries × (1 + replicas))."""

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:  # fmt: skip
        self.directory = directory
        self.count = primaries * (1 + replicas)
        self.replicas = replicas
        self.nodeTimeout = node_timeout_ms
        taken: set[int] = set()
        self.ports = [cluster_port(taken) for _ in range(self.count)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    def start_node(self, port: int) -> None:
        d = self.directory / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(d), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.nodeTimeout), "--repl-ping-replica-period", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: self._pong(port), 10, what=f"redis-server on {port}")

    @staticmethod
    def _pong(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(100).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running node says cluster_state:ok, every slot is served, and every replica has
        synced (none reports ``loading`` in CLUSTER SHARDS)."""

        def healthy() -> bool:
            for port in self.procs:
                info = _ask(port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                if "loading" in _ask(port, "CLUSTER", "SHARDS").split():
                    return False
            return True

        wait_until(healthy, timeout, 0.1, "cluster_state:ok on every node")

    def role(self, port: int) -> str:
        return _ask(port, "ROLE").split("\n", 1)[0].strip()

    def primaries(self) -> list[int]:
        return [p for p in self.procs if self.role(p) == "master"]

    def replica_of(self, primary: int) -> int:
        node_id = _ask(primary, "CLUSTER", "MYID").strip()
        for line in _ask(primary, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3] == node_id and "slave" in fields[2]:
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"no replica of {primary}")

    def owner(self, slot: int) -> int:
        """The port of the primary serving ``slot`` (asked of a running primary)."""
        for line in _ask(next(iter(self.procs)), "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for r in fields[8:]:
                if r.startswith("["):
                    continue
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"slot {slot} unowned")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)


class RedisSentinels:
    """A master, one replica and three ``redis-server --sentinel`` watching them as
    ``mymaster`` (down after 1 s), on free ports in a temp directory."""

    def __init__(self, directory: Path, down_after_ms: int = 1000) -> None:
        self.directory = directory
        taken: set[int] = set()
        self.data = [cluster_port(taken) for _ in range(2)]
        self.sentinel_ports = [cluster_port(taken) for _ in range(3)]
        self.downAfter = down_after_ms
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.sentinel_ports]

    def _spawn(self, port: int, args: list[str]) -> None:
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(lambda: RedisClusterServers._pong(port), 10, what=f"redis on {port}")

    def start(self) -> None:
        master, replica = self.data
        for port in self.data:
            d = self.directory / str(port)
            d.mkdir(exist_ok=True)
            extra = ["--replicaof", "127.0.0.1", str(master)] if port == replica else []
            self._spawn(port, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(d),
                               "--repl-ping-replica-period", "1", *extra])  # fmt: skip
        wait_until(lambda: "master_link_status:up" in _ask(replica, "INFO", "replication"), 20,
                   0.1, "the replica to sync")  # fmt: skip
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds mymaster {self.downAfter}\n"
                "sentinel failover-timeout mymaster 5000\n"
                "sentinel parallel-syncs mymaster 1\n"
            )
            self._spawn(port, ["redis-server", str(conf), "--sentinel"])

        def known() -> bool:
            for port in self.sentinel_ports:
                out = _ask(port, "SENTINEL", "replicas", "mymaster")
                if str(replica) not in out:
                    return False
                if "num-other-sentinels\n2" not in _ask(port, "SENTINEL", "master", "mymaster"):
                    return False
            return True

        wait_until(known, 30, 0.1, "the sentinels to know the replica and each other")

    def master(self) -> int:
        out = _ask(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", "mymaster")
        return int(out.split()[1])

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
