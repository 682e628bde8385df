#!/usr/bin/env bash
# Hello-world throughput of examples/http_hello.toml (one process) against the peers, one run:
# wrk -t1 -c100 and ab -k -c100, ratios to uvicorn. Run ../shared/peers/setup.sh first.
#   usage: bash bench/http.sh [peer ...]     (default: uvicorn aiohttp twistedweb)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$HERE/../shared/peers}
cd "$HERE/examples"
exec bash "$PEERS/http_compare.sh" --ours "twistd --pidfile= -n swoole -c $HERE/examples/http_hello.toml" 9501 "${@:-uvicorn aiohttp twistedweb}"
