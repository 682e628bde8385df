#!/usr/bin/env bash
# HTTP/2 hello world over TLS (h2 by ALPN), h2load -c 10 -m 10, ours (one process,
# open_http2_protocol) against hypercorn (one worker, uvloop; both on the h2 library),
# interleaved over ROUNDS rounds, same ECDSA P-256 certificate.
#   usage: bench/h2.sh    env: N (50000), ROUNDS (3)
# Needs hypercorn in the peers' venv (/tmp/peers-venv/bin/pip install hypercorn) and h2load
# (Debian's nghttp2-client).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=$HERE/../../shared/peers
PY=/tmp/peers-venv/bin/python
N=${N:-50000}; ROUNDS=${ROUNDS:-3}
. "$HERE/lib.sh"
DIR=$(mktemp -d)
self_signed "$DIR"
hello_config "$DIR/h2.toml" 8445 'open_http2_protocol = true' \
  "ssl_cert_file = \"$DIR/cert.pem\"" "ssl_key_file = \"$DIR/key.pem\""
# hypercorn closes a connection after keep_alive_max_requests (1000): lifted, as h2load
# does not reconnect
printf 'keep_alive_max_requests = 100000000\n' > "$DIR/hypercorn.toml"
declare -A CMD PORT
CMD[ours]="twistd -n --pidfile= swoole -c $DIR/h2.toml"; PORT[ours]=8445
CMD[hypercorn]="$PY -m hypercorn uvicorn_hello:app --bind 127.0.0.1:8446 --worker-class uvloop \
  --config $DIR/hypercorn.toml --certfile $DIR/cert.pem --keyfile $DIR/key.pem --log-level warning"; PORT[hypercorn]=8446
names="ours hypercorn"
start ours "$HERE/../examples" "${CMD[ours]}"
start hypercorn "$PEERS" "${CMD[hypercorn]}"
for n in $names; do wait_port "${PORT[$n]}"; done
declare -A RUNS
for r in $(seq "$ROUNDS"); do
  for n in $names; do
    out=$(h2load -n "$N" -c 10 -m 10 "https://127.0.0.1:${PORT[$n]}/")
    rps=$(echo "$out" | awk '/finished in/ {print $4}')
    ok=$(echo "$out" | awk '/status codes/ {print $3}')
    echo "$n round $r: $rps requests/s ($ok 2xx of $N)"
    RUNS[$n]="${RUNS[$n]:-} $rps"
  done
done
for n in $names; do echo "median $n $(median ${RUNS[$n]}) requests/s"; done
ratio "ours / hypercorn" "$(median ${RUNS[ours]})" "$(median ${RUNS[hypercorn]})"
