"""Three nodes on one machine, each in its own network namespace: ``twistd swoole`` with 2
workers and a Redis Cluster primary, HAProxy (PROXY v2, health checks) in front, load from a
client namespace.  A rolling reload of every node fails no request; ``kill -9`` of a node fails
at most the requests in flight on it, and its WebSocket members reconnect to the others, where
the room still reaches them."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.multinode import Cluster, can_make_namespaces

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not can_make_namespaces(), reason="needs root for ip netns"),
]
HTTP_CONNS, WS_CLIENTS = 12, 6


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(240)
def test_rolling_reload_and_a_dead_node(cluster: Cluster) -> None:
    c = cluster
    c.start_load(HTTP_CONNS, WS_CLIENTS)

    def settled() -> bool:
        s = c.stats()
        members = s["ws"].values()
        return (s["ok"] > 300 and set(s["nodes"]) == set(c.nodes)
                and all(m["node"] for m in members) and len(members) == WS_CLIENTS)  # fmt: skip

    c.wait(settled, 60, "load on every node")
    s = c.stats()
    assert s["fail"] == 0, s["errors"]
    assert set(s["peers"]) == {c.hosts.address["client"]}  # PROXY v2: the client, not HAProxy
    ws_nodes = {m["node"] for m in s["ws"].values()}

    # Rolling reload: one node after the other, under load; no request fails.
    for n in c.nodes:
        before = c.stats()["ok"]
        c.servers[n].signal(signal.SIGUSR1)
        c.servers[n].wait_for(rb"reload to generation 2 finished", 60)
        c.wait(lambda before=before: c.stats()["ok"] > before + 200, 30, f"load after {n}")
    s = c.stats()
    assert s["fail"] == 0, s["errors"]

    # kill -9 one node (the one most members are on): HAProxy takes it out.
    victim = max(c.nodes, key=lambda n: sum(m["node"] == n for m in s["ws"].values()))
    failed_before, ok_before = s["fail"], s["ok"]
    on_victim = [name for name, m in s["ws"].items() if m["node"] == victim]
    c.kill_node(victim)

    def recovered() -> bool:
        now = c.stats()
        members = now["ws"].values()
        return (now["ok"] > ok_before + 500
                and all(m["node"] not in (None, victim) for m in members))  # fmt: skip

    c.wait(recovered, 60, "the members to reconnect and the load to go on")
    s = c.stats()
    failed = s["fail"] - failed_before
    print(
        f"\nkill -9 {victim}: {failed} requests failed, {len(on_victim)} members moved, "
        f"{s['ok']} answered in all, {len(ws_nodes)} nodes held members"
    )
    assert failed <= HTTP_CONNS, s["errors"]  # at most one in flight per connection
    for name in on_victim:
        assert s["ws"][name]["connects"] >= 2 and s["ws"][name]["node"] != victim
    # The room still crosses the nodes: every member hears w0's latest ticks.
    tick = s["ws"]["w0"]["tick"]
    c.wait(lambda: all(m["tick"] > tick for m in c.stats()["ws"].values()), 20,
           "every member to hear a tick after the kill")  # fmt: skip
    before = c.stats()["fail"]
    c.wait(lambda: c.stats()["ok"] > s["ok"] + 300, 30, "more load")
    assert c.stats()["fail"] == before  # no more failures once HAProxy took it out
