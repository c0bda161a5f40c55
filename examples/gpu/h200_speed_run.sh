#!/usr/bin/env bash
# The whole H200 measurement of issue 8 in one command, run from the repository root on the GPU
# machine after examples/gpu/prepare_h200_run.sh (carry .whl and .bench). About 7 minutes:
# the baseline's Hugging Face variant, then each project variant (tools/speed_comparison.py);
# then, within CP_CHECK_S more, the CP attention at 32k against plain SDPA (examples/gpu/cp_attention_check.py).
set -uo pipefail
OUT=${OUT:-speed_results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv
python3 -c "import torch, triton, megatron.core, hydra; print('torch', torch.__version__, 'triton', triton.__version__, 'megatron-core', megatron.core.__version__)"
python3 tools/speed_comparison.py --baseline-script .bench/gpu_baseline.py --out "$OUT" \
    --budget-s "${BUDGET_S:-380}" 2>&1 | tee "$OUT/speed_log.txt"
speed_status=$?
# Last, and under its own timeout: a failure or overrun here leaves the speed comparison's files intact.
timeout "${CP_CHECK_S:-150}" python3 examples/gpu/cp_attention_check.py --json "$OUT/cp_attention.json" \
    2>&1 | tee "$OUT/cp_attention.txt"
exit "$speed_status"  # the speed comparison decides; the CP check reports in its own files
