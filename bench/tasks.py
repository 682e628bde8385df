"""Small-task round trips: ours (2 workers, 2 task workers, ``await server.task(x)``) against
``concurrent.futures.ProcessPoolExecutor`` driven the same way from asyncio loops (2 driver
processes with a 1-process pool each, and 1 driver with a 2-process pool), interleaved.

    python bench/tasks.py [--size N] [--rounds R] [--dur S] [--c C]

Prints tasks/s per run, the medians, and ours / the better peer.  ``--size 0`` sends the
integer i (the handler returns i + 1); otherwise N bytes, returned as they came.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from twistd_run import twistd


def echo(data: object) -> object:
    return data + 1 if isinstance(data, int) else data  # type: ignore[operator]


def ours(size: int, dur: float, c: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "tasks.toml"
        cfg.write_text(
            '[server]\ntype = "http"\nport = 0\napp = "task_app:hello"\n'
            '[settings]\nworker_num = 2\ntask_worker_num = 2\nlog_level = "warning"\n'
            f"package_max_length = {max(4 << 20, 2 * size)}\n"
            '[events]\nworker_start = "task_app:start"\ntask = "task_app:on_task"\n'
        )
        proc = twistd(cfg, BENCH_DIR=tmp, BENCH_SIZE=str(size), BENCH_DUR=str(dur),
                      BENCH_C=str(c))  # fmt: skip
        try:
            deadline = time.monotonic() + dur + 60
            files = [Path(tmp) / "w0", Path(tmp) / "w1"]
            while not all(f.exists() and f.read_text() for f in files):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the benchmark server did not report")
                time.sleep(0.05)
            return sum(float(f.read_text()) for f in files)
        finally:
            proc.terminate()
            proc.wait(30)


def _driver(size: int, dur: float, c: int, workers: int, out: multiprocessing.Queue) -> None:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        payload = b"x" * size if size else 1
        done = 0
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            await asyncio.gather(*[loop.run_in_executor(pool, echo, 0) for _ in range(workers)])
            end = time.monotonic() + dur

            async def one() -> None:
                nonlocal done
                while time.monotonic() < end:
                    await loop.run_in_executor(pool, echo, payload)
                    done += 1

            await asyncio.gather(*[one() for _ in range(c)])
        return done / dur

    out.put(asyncio.run(run()))


def peer(size: int, dur: float, c: int, drivers: int, pool: int) -> float:
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_driver, args=(size, dur, c, pool, out))
             for _ in range(drivers)]  # fmt: skip
    for p in procs:
        p.start()
    total = sum(out.get(timeout=dur + 60) for _ in procs)
    for p in procs:
        p.join()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dur", type=float, default=3.0)
    ap.add_argument("--c", type=int, default=32)
    a = ap.parse_args()
    runs: dict[str, list[float]] = {"ours": [], "pool 2x1": [], "pool 1x2": []}
    for r in range(a.rounds):
        for name in runs:
            if name == "ours":
                rate = ours(a.size, a.dur, a.c)
            else:
                drivers, pool = (2, 1) if name == "pool 2x1" else (1, 2)
                rate = peer(a.size, a.dur, a.c, drivers, pool)
            runs[name].append(rate)
            print(f"round {r + 1} {name:9} {rate:10.0f} tasks/s", flush=True)
    med = {name: statistics.median(v) for name, v in runs.items()}
    for name, m in med.items():
        print(f"median {name:9} {m:10.0f} tasks/s")
    best = max(med["pool 2x1"], med["pool 1x2"])
    print(f"ratio ours / best ProcessPoolExecutor = {med['ours'] / best:.2f} (size {a.size})")


if __name__ == "__main__":
    main()
