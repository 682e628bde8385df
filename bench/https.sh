#!/usr/bin/env bash
# HTTPS hello world, wrk over TLS (keep-alive), ours (one process) against uvicorn (one
# process, --ssl-certfile), interleaved over ROUNDS rounds; both with the same ECDSA P-256
# certificate, TLS 1.3.   usage: bench/https.sh    env: C (50), DUR (5s), ROUNDS (3)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=$HERE/../../shared/peers
PY=/tmp/peers-venv/bin/python
C=${C:-50}; DUR=${DUR:-5s}; ROUNDS=${ROUNDS:-3}
. "$HERE/lib.sh"
DIR=$(mktemp -d)
self_signed "$DIR"
hello_config "$DIR/https.toml" 8443 "ssl_cert_file = \"$DIR/cert.pem\"" \
  "ssl_key_file = \"$DIR/key.pem\""
declare -A CMD PORT
CMD[ours]="twistd -n --pidfile= swoole -c $DIR/https.toml"; PORT[ours]=8443
CMD[uvicorn]="$PY -m uvicorn uvicorn_hello:app --port 8444 --log-level warning --no-access-log \
  --ssl-certfile $DIR/cert.pem --ssl-keyfile $DIR/key.pem"; PORT[uvicorn]=8444
names="ours uvicorn"
start ours "$HERE/../examples" "${CMD[ours]}"
start uvicorn "$PEERS" "${CMD[uvicorn]}"
for n in $names; do wait_port "${PORT[$n]}"; done
declare -A RUNS
for r in $(seq "$ROUNDS"); do
  for n in $names; do
    rps=$(wrk -t1 -c "$C" -d "$DUR" "https://127.0.0.1:${PORT[$n]}/" | awk '/Requests\/sec/ {print $2}')
    echo "$n round $r: $rps requests/s"
    RUNS[$n]="${RUNS[$n]:-} $rps"
  done
done
for n in $names; do echo "median $n $(median ${RUNS[$n]}) requests/s"; done
ratio "ours / uvicorn" "$(median ${RUNS[ours]})" "$(median ${RUNS[uvicorn]})"
