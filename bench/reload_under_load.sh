#!/usr/bin/env bash
# Reload, recycling, shutdown and load spread under load, on examples/http_hello.py.
#  1. ab -k -c 50 -t 8 with worker_num = 2 while the master gets SIGUSR1 three times 1.5 s apart
#  2. the same without -k
#  3. worker_num = 1, max_request = 500: 20,000 keep-alive requests
#  4. share of new connections per worker with 2 and 4 workers (ab -c 50 -n 20000, no -k)
#  5. SIGTERM under keep-alive load: how clients learn of it (answers, refusals, resets)
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'pkill -f "swoole -c $WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$HERE/examples"

start() {  # start NAME worker_num extra-settings...
  local name=$1 workers=$2; shift 2
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  { printf '[server]\ntype = "http"\nhost = "127.0.0.1"\nport = %s\napp = "http_hello:handler"\n' "$port"
    printf '[settings]\nworker_num = %s\nmax_wait_time = 3\n' "$workers"
    for kv in "$@"; do echo "$kv"; done; } > "$WORK/$name.toml"
  twistd --pidfile="$WORK/$name.pid" -n swoole -c "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 &
  for _ in $(seq 100); do
    [ "$(grep -c ' ready' "$WORK/$name.log" 2>/dev/null)" -ge "$workers" ] && break; sleep 0.1
  done
  PORT=$port; PIDFILE=$WORK/$name.pid; LOG=$WORK/$name.log
}
stop() { python3 -m tx_swoole stop --pidfile "$PIDFILE" > /dev/null; }
abstats() { awk '/Complete requests/{c=$3} /Failed requests/{f=$3} /Non-2xx/{n=$3} /Keep-Alive requests/{k=$3} /Requests per second/{r=$4} END{printf "complete=%s failed=%s non2xx=%s keepalive=%s req/s=%s\n", c, f, n+0, k+0, r}'; }

for mode in "-k" ""; do
  start reload 2
  before=$(python3 -m tx_swoole status --pidfile "$PIDFILE" --json | python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(sys.stdin)["workers"]))')
  ab $mode -c 50 -t 8 -n 10000000 "http://127.0.0.1:$PORT/" > "$WORK/ab.txt" 2>&1 &
  sleep 1
  for _ in 1 2 3; do kill -USR1 "$(cat "$PIDFILE")"; sleep 1.5; done
  wait $!
  sleep 3.5
  alive=0; for p in $before; do kill -0 "$p" 2>/dev/null && alive=$((alive+1)); done
  gen=$(python3 -m tx_swoole status --pidfile "$PIDFILE" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["master"]["generation"], sorted({w["generation"] for w in d["workers"]}))')
  echo "reload x3 under ab ${mode:-(no -k)}: $(abstats < "$WORK/ab.txt") | generation $gen | old workers alive after max_wait_time: $alive"
  stop
done

start recycle 1 "max_request = 500"
ab -k -c 50 -n 20000 "http://127.0.0.1:$PORT/" > "$WORK/ab.txt" 2>&1
echo "max_request=500, 20000 keep-alive requests: $(abstats < "$WORK/ab.txt") | recycles: $(grep -c 'max_request reached' "$LOG")"
stop

for n in 2 4; do
  start "spread$n" "$n"
  ab -c 50 -n 20000 "http://127.0.0.1:$PORT/" > "$WORK/ab.txt" 2>&1
  sleep 1.5
  shares=$(python3 -m tx_swoole status --pidfile "$PIDFILE" --json | python3 -c 'import json,sys; w=[x["requests"] for x in json.load(sys.stdin)["workers"]]; print(" ".join(f"{100*x/sum(w):.0f}%" for x in w))')
  echo "spread over $n workers (ab -c 50 -n 20000, new connection each): $shares | $(abstats < "$WORK/ab.txt")"
  stop
done

start shutdown 2
PYTHONPATH="$HERE" python3 - "$PORT" "$(cat "$PIDFILE")" <<'PY'
import os, signal, sys, time
from tests.support import HTTPLoad, pid_alive
port, master = int(sys.argv[1]), int(sys.argv[2])
with HTTPLoad(port, connections=20) as load:
    time.sleep(2)
    t = time.monotonic()
    os.kill(master, signal.SIGTERM)
    while pid_alive(master):
        time.sleep(0.02)
    took = time.monotonic() - t
    time.sleep(0.5)
print(f"SIGTERM under keep-alive load (20 connections): answered={load.ok} with Connection: close={load.closes} "
      f"refused connects={load.refused} dropped/reset={len(load.failures)} master exit after {took:.2f}s")
PY
