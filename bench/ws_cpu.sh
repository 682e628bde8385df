#!/usr/bin/env bash
# Server CPU time per echoed WebSocket message, ours against websockets and autobahn, run
# interleaved (A B C A B C ...).  On a 2-core machine the Go load client takes about one core,
# so messages/s saturates with the machine; CPU time per message is what the server itself
# spends.  usage: bench/ws_cpu.sh   env: C (100), SIZE (65536), DUR (5s), ROUNDS (3)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=$HERE/../../shared/peers
PY=/tmp/peers-venv/bin/python
C=${C:-100}; SIZE=${SIZE:-65536}; DUR=${DUR:-5s}; ROUNDS=${ROUNDS:-3}
declare -A CMD PORT
CMD[ours]="twistd -n swoole -c $HERE/ws_echo.toml"; PORT[ours]=9502
CMD[websockets]="$PY $PEERS/websockets_echo.py 8091"; PORT[websockets]=8091
CMD[autobahn]="$PY $PEERS/autobahn_echo.py 8092"; PORT[autobahn]=8092
names="ours websockets autobahn"
. "$HERE/lib.sh"
for n in $names; do start "$n" "$HERE" "${CMD[$n]}"; done
for n in $names; do wait_port "${PORT[$n]}"; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A PID RUNS
i=0
for n in $names; do PID[$n]=${pids[$i]}; i=$((i + 1)); done
HZ=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for n in $names; do
    t0=$(ticks "${PID[$n]}")
    out=$(/tmp/peers-ws-load -url "ws://127.0.0.1:${PORT[$n]}/" -c "$C" -size "$SIZE" -d "$DUR")
    t1=$(ticks "${PID[$n]}")
    msgs=$(echo "$out" | awk '{print $2}')
    us=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v m="$msgs" -v d="${DUR%s}" \
      'BEGIN{printf "%.1f", t / hz * 1e6 / (m * d)}')
    echo "$n round $r: $msgs messages/s, $us us of server CPU per message"
    RUNS[$n]="${RUNS[$n]:-} $us"
  done
done
declare -A MED
for n in $names; do
  MED[$n]=$(median ${RUNS[$n]})
  echo "median $n ${MED[$n]} us per message"
done
for n in websockets autobahn; do
  awk -v a="${MED[$n]}" -v b="${MED[ours]}" -v n="$n" \
    'BEGIN{printf "%s uses %.2fx the CPU per message that ours does\n", n, a/b}'
done
