#!/usr/bin/env bash
# The batching gain of the model server on this machine: the same load (SERVING_REQUESTS requests, SERVING_CONCURRENCY
# in flight, SERVING_MAX_TOKENS new tokens each, streamed) against `megatron-sota-serve --max-batch 1` (one completion
# at a time) and then `--max-batch SERVING_MAX_BATCH`, one server after the other on the same checkpoint.
#   bash examples/serving_benchmark.sh <checkpoint dir> [out dir]
# Reports: <out>/one_at_a_time.json and <out>/batched.json (tools/serving_benchmark.py's), and a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKPOINT=${1:?usage: bash examples/serving_benchmark.sh <checkpoint dir> [out dir]}
OUT=${2:-.serving_benchmark}
REQUESTS=${SERVING_REQUESTS:-200}
CONCURRENCY=${SERVING_CONCURRENCY:-8}
MAX_TOKENS=${SERVING_MAX_TOKENS:-32}
MAX_BATCH=${SERVING_MAX_BATCH:-8}
PORT=${SERVING_PORT:-8417}
mkdir -p "$OUT"

serve_and_load() {  # <max batch> <report name>
    python tools/serve.py --load "$CHECKPOINT" --port "$PORT" --served-model-name bench --max-batch "$1" \
        --max-queue "$((REQUESTS + 1))" 2> "$OUT/$2.server.log" &
    local server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
        kill -0 $server 2>/dev/null || { cat "$OUT/$2.server.log" >&2; exit 1; }
        sleep 0.5
    done
    python tools/serving_benchmark.py --url "http://127.0.0.1:$PORT" --model bench --requests "$REQUESTS" \
        --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" --stream --warmup 4 \
        --prompt "def main():" --prompt "import os" --prompt "class Parser:" --prompt "for line in" \
        --report "$OUT/$2.json"
    kill $server && wait $server 2>/dev/null || true
    trap - EXIT
}

echo "== one completion at a time (--max-batch 1)"
serve_and_load 1 one_at_a_time
echo "== micro-batched (--max-batch $MAX_BATCH)"
serve_and_load "$MAX_BATCH" batched
python - "$OUT" <<'PY'
import json, os, sys

one, batched = (json.load(open(os.path.join(sys.argv[1], f"{n}.json"))) for n in ("one_at_a_time", "batched"))
one, batched = one["runs"][0] if "runs" in one else one, batched["runs"][0] if "runs" in batched else batched
print(f"tokens/s: {one['tokens_per_second']:.1f} one at a time, {batched['tokens_per_second']:.1f} batched "
      f"({batched['tokens_per_second'] / one['tokens_per_second']:.2f}x); p50/p99 latency "
      f"{one['latency_p50_s']:.2f}/{one['latency_p99_s']:.2f} s vs {batched['latency_p50_s']:.2f}/{batched['latency_p99_s']:.2f} s")
PY
