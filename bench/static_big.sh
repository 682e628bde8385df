#!/usr/bin/env bash
# One big static file (1 GiB) over loopback, ours (one process, enable_static_handler) against
# nginx (one worker, sendfile on: bench/nginx_sendfile.conf), interleaved over ROUNDS rounds; MB/s as curl reads it.
#   usage: bench/static_big.sh    env: SIZE_MB (1024), ROUNDS (3)
# The file lives in /tmp/peers-webroot (the peers' nginx.conf root).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SIZE_MB=${SIZE_MB:-1024}; ROUNDS=${ROUNDS:-3}
ROOT=/tmp/peers-webroot
mkdir -p "$ROOT"
[ "$(stat -c %s "$ROOT/big.bin" 2>/dev/null)" = $((SIZE_MB << 20)) ] ||
  head -c $((SIZE_MB << 20)) /dev/urandom > "$ROOT/big.bin"
. "$HERE/lib.sh"
CFG=$(mktemp -d)/static.toml
hello_config "$CFG" 8089 'enable_static_handler = true' "document_root = \"$ROOT\""
declare -A CMD PORT
CMD[ours]="twistd -n --pidfile= swoole -c $CFG"; PORT[ours]=8089
CMD[nginx]="nginx -c $HERE/nginx_sendfile.conf"; PORT[nginx]=8090  # the peers' one with sendfile on
names="ours nginx"
for n in $names; do start "$n" "$HERE/../examples" "${CMD[$n]}"; done
for n in $names; do wait_port "${PORT[$n]}"; done
cat "$ROOT/big.bin" > /dev/null  # in the page cache for both
declare -A RUNS
for r in $(seq "$ROUNDS"); do
  for n in $names; do
    bps=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:${PORT[$n]}/big.bin")
    mbs=$(awk -v b="$bps" 'BEGIN{printf "%.0f", b / 1e6}')
    echo "$n round $r: $mbs MB/s"
    RUNS[$n]="${RUNS[$n]:-} $mbs"
  done
done
for n in $names; do echo "median $n $(median ${RUNS[$n]}) MB/s"; done
ratio "ours / nginx" "$(median ${RUNS[ours]})" "$(median ${RUNS[nginx]})"
