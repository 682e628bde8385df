#!/usr/bin/env bash
# Hello-world throughput, ours and uvicorn interleaved (ours uvicorn ours uvicorn ...), ROUNDS
# rounds of ../shared/peers/http_compare.sh; prints each round's ratio and the medians.
#   usage: bash bench/http_interleaved.sh [ROUNDS]   (env DUR, N as http_compare.sh; OURS=dir of
#          another checkout to measure instead of this one)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
OURS=${OURS:-$HERE}
PEERS=${PEERS:-$HERE/../shared/peers}
ROUNDS=${1:-3}
out=$(mktemp)
cd "$OURS/examples"
for i in $(seq "$ROUNDS"); do
  PYTHONPATH=$OURS bash "$PEERS/http_compare.sh" \
    --ours "twistd --pidfile= -n swoole -c $OURS/examples/http_hello.toml" 9501 uvicorn | tee -a "$out"
done
python3 - "$out" <<'EOF'
import re, statistics, sys
text = open(sys.argv[1]).read()
ours = [float(x) for x in re.findall(r"^ours\s+wrk\s+([\d.]+)", text, re.M)]
uvi = [float(x) for x in re.findall(r"^uvicorn\s+wrk\s+([\d.]+)", text, re.M)]
ratios = [a / b for a, b in zip(ours, uvi)]
print("rounds:", " ".join(f"{r:.2f}" for r in ratios))
print(f"median ours {statistics.median(ours):,.0f} req/s, uvicorn {statistics.median(uvi):,.0f} "
      f"req/s, median ratio {statistics.median(ratios):.2f}")
EOF
rm -f "$out"
