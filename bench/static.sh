#!/usr/bin/env bash
# A 1 KiB static file, ab -k -c100, ours (one process, enable_static_handler) against nginx
# (one worker, sendfile) and twisted.web's static.File, interleaved over ROUNDS rounds.
#   usage: bench/static.sh    env: N (50000), C (100), ROUNDS (3), SIZE (1024)
# Files live in /tmp/peers-webroot (the peers' nginx.conf root).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=$HERE/../../shared/peers
N=${N:-50000}; C=${C:-100}; ROUNDS=${ROUNDS:-3}; SIZE=${SIZE:-1024}
ROOT=/tmp/peers-webroot
mkdir -p "$ROOT"
head -c "$SIZE" /dev/urandom > "$ROOT/file.bin"
. "$HERE/lib.sh"
CFG=$(mktemp -d)/static.toml
hello_config "$CFG" 8087 'enable_static_handler = true' "document_root = \"$ROOT\""
declare -A CMD PORT
CMD[ours]="twistd -n --pidfile= swoole -c $CFG"; PORT[ours]=8087
CMD[nginx]="nginx -c $PEERS/nginx.conf"; PORT[nginx]=8086
CMD[twistedweb]="twistd -n --pidfile= web --path $ROOT --listen tcp:8088:interface=127.0.0.1"
PORT[twistedweb]=8088
names="ours nginx twistedweb"
for n in $names; do start "$n" "$HERE/../examples" "${CMD[$n]}"; done
for n in $names; do wait_port "${PORT[$n]}"; done
declare -A RUNS
for r in $(seq "$ROUNDS"); do
  for n in $names; do
    rps=$(timeout 120 ab -q -s 10 -k -c "$C" -n "$N" "http://127.0.0.1:${PORT[$n]}/file.bin" 2>/dev/null |
          awk '/Requests per second/ {print $4}')
    echo "$n round $r: $rps requests/s"
    RUNS[$n]="${RUNS[$n]:-} $rps"
  done
done
declare -A MED
for n in $names; do
  MED[$n]=$(median ${RUNS[$n]})
  echo "median $n ${MED[$n]} requests/s"
done
for n in nginx twistedweb; do ratio "ours / $n" "${MED[ours]}" "${MED[$n]}"; done
