"""``python -m tx_swoole reload|stop|status --pidfile FILE``: control a running master.

``reload`` sends SIGUSR1 and waits until every worker belongs to the new generation;
``stop`` sends SIGTERM and waits for the master to exit; ``status`` prints the master pid and,
per worker, id, pid, generation, age, open connections and requests served (``--json`` for
scripts).  The figures come from ``PIDFILE.status.json``, which the master keeps current.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

WAIT = 60.0  # seconds reload/stop wait for the master before giving up


def _read_pid(pidfile: str) -> int:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read a pid from {pidfile}: {e}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise SystemExit(f"master pid {pid} (from {pidfile}) is not running") from None
    return pid


def _status(pidfile: str) -> dict[str, Any] | None:
    try:
        with open(pidfile + ".status.json") as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs (a zombie, exited but not reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"  # a zombie has exited
    except OSError:
        return True


def cmd_status(pidfile: str, as_json: bool) -> int:
    pid = _read_pid(pidfile)
    status = _status(pidfile)
    if status is None:
        print(f"master pid {pid} is running but has no status file yet", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    m = status["master"]
    if m.get("in_process"):
        print(f"pid {m['pid']}  serving in process (worker_num = 0)  up {m['uptime']:.0f}s")
    else:
        kinds = [w.get("kind", "worker") for w in status["workers"]]
        print(f"master pid {m['pid']}  generation {m['generation']}  up {m['uptime']:.0f}s  "
              f"workers {kinds.count('worker')}/{m['worker_num']}"
              + (f"  task workers {kinds.count('task')}/{m['task_worker_num']}"
                 if m.get("task_worker_num") else "")
              + (f"  processes {kinds.count('process')}/{m['process_num']}"
                 if m.get("process_num") else "")
              + ("  (reloading)" if m.get("reloading") else ""))  # fmt: skip
    totals = status.get("stats")
    if totals:
        print("  ".join(f"{k} {v}" for k, v in totals.items() if k != "start_time"))
    print(f"{'kind':>6} {'id':>3} {'pid':>8} {'gen':>4} {'state':>9} {'age':>8} {'conns':>6} "
          f"{'requests':>9}")  # fmt: skip
    for w in status["workers"]:
        kind = w.get("kind", "worker")
        kind = "proc" if kind == "process" else kind
        print(f"{kind:>6} {w['id']:>3} {w['pid']:>8} {w['generation']:>4} {w['state']:>9} "
              f"{w['age']:>7.0f}s {w['connections']:>6} {w['requests']:>9}"
              + (f"  {w['name']}" if w.get("name") else ""))  # fmt: skip
    return 0


def cmd_reload(pidfile: str) -> int:
    pid = _read_pid(pidfile)
    before = _status(pidfile)
    if before and before["master"].get("in_process"):
        print(f"reload refused: pid {pid} serves the app in process (worker_num = 0), so there "
              "is no worker to replace and SIGUSR1 would only rotate twistd's log; restart it, "
              "or set worker_num >= 1 for graceful reloads", file=sys.stderr)  # fmt: skip
        return 2
    old_gen = before["master"]["generation"] if before else 0
    os.kill(pid, signal.SIGUSR1)
    print(f"reload requested: SIGUSR1 sent to master pid {pid}")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = _status(pidfile)
        if (
            status
            and status["master"]["generation"] > old_gen
            and not status["master"]["reloading"]
        ):
            workers = status["workers"]
            gen = status["master"]["generation"]
            if workers and all(w["generation"] == gen for w in workers):
                pids = ", ".join(str(w["pid"]) for w in workers)
                print(f"reloaded: generation {gen}, workers {pids}")
                return 0
        time.sleep(0.1)
    print("reload not confirmed within 60s (a reload may already be running; see the log)",
          file=sys.stderr)  # fmt: skip
    return 1


def cmd_stop(pidfile: str) -> int:
    pid = _read_pid(pidfile)
    os.kill(pid, signal.SIGTERM)
    print(f"stop requested: SIGTERM sent to master pid {pid}")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print(f"master pid {pid} exited")
            return 0
        time.sleep(0.05)
    print(f"master pid {pid} still running after {WAIT:.0f}s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tx_swoole", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("reload", "stop", "status"))
    parser.add_argument("--pidfile", default="twistd.pid", help="the master's pid file")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    pidfile = os.path.abspath(args.pidfile)
    if args.command == "status":
        return cmd_status(pidfile, args.json)
    if args.command == "reload":
        return cmd_reload(pidfile)
    return cmd_stop(pidfile)
