"""Throughput of N nodes behind HAProxy against one node, on the same CPUs.

``sudo python bench/multinode.py [SECONDS] [ROUNDS]`` builds the namespaces of
``tests/test_multinode.py`` (a Redis Cluster primary per node, HAProxy with PROXY v2, a
client namespace) twice: 1 node and 3 nodes, each node ``worker_num = 1``.  Every node process
is pinned to CPU 1, HAProxy and ``wrk`` (in the client namespace, 64 keep-alive connections,
``GET /``) to CPU 0, so both setups have the same CPU.  Setups alternate (A B A B ...); prints
requests/s per round, the medians and the ratio.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.multinode import Cluster  # noqa: E402


def measure(nodes: int, seconds: int) -> float:
    c = Cluster(Path(tempfile.mkdtemp()), nodes=nodes, workers=1, pin=("1", "0"))
    try:
        c.start()
        url = f"http://{c.hosts.address['lb']}/"
        run = [*c.hosts.run("client"), "taskset", "-c", "0", "wrk", "-t1", "-c64"]

        def warm() -> bool:
            out = subprocess.run([*run, "-d1", url], capture_output=True, text=True).stdout
            return "Requests/sec" in out and "Non-2xx" not in out and "Socket errors" not in out

        c.wait(warm, 30, "HAProxy and the nodes to answer")
        out = subprocess.run([*run, f"-d{seconds}", url], capture_output=True, text=True).stdout
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        assert errors is None, out
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    finally:
        c.stop()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    got: dict[int, list[float]] = {1: [], 3: []}
    for r in range(rounds):
        for nodes in (1, 3):
            got[nodes].append(measure(nodes, seconds))
            print(f"round {r + 1}: {nodes} node(s): {got[nodes][-1]:.0f} req/s", flush=True)
    one, three = statistics.median(got[1]), statistics.median(got[3])
    print(f"1 node {one:.0f} req/s, 3 nodes {three:.0f} req/s: {three / one:.2f}x on the same "
          f"CPU (medians of {rounds}; nodes on CPU 1, HAProxy and wrk on CPU 0)")  # fmt: skip


if __name__ == "__main__":
    main()
