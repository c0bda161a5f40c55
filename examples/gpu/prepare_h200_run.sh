#!/usr/bin/env bash
# Run HERE (a machine with registry access), from the repository root, before the H200 run:
# the H200 has torch, triton and transformers but no megatron-core/hydra and no registry.
# Writes .whl/ (Python 3.12 wheels) and .bench/gpu_baseline.py, both ignored by git; the
# device run carries them (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.bench/' .git/info/exclude 2>/dev/null || echo '/.bench/' >> .git/info/exclude
mkdir -p .whl .bench
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl megatron-core==0.16.1 hydra-core==1.3.2 omegaconf==2.3.0
# antlr4 4.9.3 (hydra's parser runtime) is published only as an sdist: build its pure wheel here.
python3 -m pip download -q --no-deps --no-binary=:all: antlr4-python3-runtime==4.9.3 -d .bench/sdist
python3 -m pip wheel -q --no-deps .bench/sdist/antlr4-python3-runtime-4.9.3.tar.gz -w .whl
rm -rf .bench/sdist
cp "${BASELINE_SCRIPT:-../shared/bench/gpu_baseline.py}" .bench/gpu_baseline.py
ls -la .whl .bench
