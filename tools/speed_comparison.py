#!/usr/bin/env python
"""One run that compares this project's training speed with the Hugging Face baseline, side by side.

Each variant runs in its own subprocess (a fresh CUDA context and allocator): the baseline script's
Hugging Face variant (gpu_baseline.py, same shape; docs/performance.md), then the installed package's
benchmark (megatron-sota-benchmark, run as `python -m megatron_sota.cli.benchmark`) with the project's
variants. Before any speed counts, each variant's losses of the first steps must equal the unfused
reference's within the tolerance (same weights, same data: only kernels differ).

  python tools/speed_comparison.py --baseline-script .bench/gpu_baseline.py --out results/
  python tools/speed_comparison.py --cpu-smoke        # the same logic on tiny, on CPU, no baseline

Variants are run in the order given and skipped once --budget-s is spent, so the most important come first.
A developer's script: it imports nothing from the checkout; the variants import megatron_sota as installed
(or from PYTHONPATH, as examples/gpu/h200_speed_run.sh sets it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# The baseline's shape (docs/performance.md): llama_1b3, sequence 4096, 4 x 4096 = 16,384 tokens per step.
GPU_SHAPE = ["model=llama_1b3", "precision=bf16", "train.seq_length=4096", "train.micro_batch_size=4",
             "train.global_batch_size=4", "parallel.distributed_optimizer=false"]
CPU_SHAPE = ["model=tiny", "precision=fp32", "runtime.device=cpu", "train.seq_length=128",
             "train.micro_batch_size=2", "train.global_batch_size=2", "parallel.distributed_optimizer=false"]
UNFUSED = ["kernels.swiglu=false", "kernels.cross_entropy=false", "kernels.rms_norm=false", "kernels.compile_layers=false"]
FUSED = ["kernels.swiglu=true", "kernels.cross_entropy=true", "kernels.rms_norm=true", "kernels.compile_layers=false"]
COMPILED = ["kernels.swiglu=true", "kernels.cross_entropy=true", "kernels.rms_norm=true", "kernels.compile_layers=true"]


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: List[str]
    prediction: str
    """What we expect before measuring (docs/performance.md records prediction and result)."""


# Most important first: a variant is skipped once the time budget is spent.
VARIANTS = [
    Variant("unfused", UNFUSED, "0.90-1.0x HF: the baseline's mcore_sdpa row (0.97x) plus fp32 master weights and gradients"),
    Variant("compiled_layers", COMPILED, "1.05-1.15x HF: norms, RoPE, SwiGLU, residual adds fused per layer, fused CE"),
    Variant("fused", FUSED, "0.97-1.05x HF: fused SwiGLU, CE and RMSNorm only; RoPE and residual adds stay eager"),
    Variant("compiled_layers_cudnn", COMPILED + ["kernels.attention_backend=cudnn"],
            "+3-8% over compiled_layers if cuDNN's Hopper attention runs this GQA shape, else the same"),
    Variant("compiled_layers_mbs8", COMPILED + ["train.micro_batch_size=8", "train.global_batch_size=8"],
            "+0-3% tokens/s over mbs 4 (32,768 tokens per step, not the baseline's shape), ~2x activation memory"),
]


@dataclass
class Outcome:
    name: str
    kind: str
    tokens_per_s: Optional[float] = None
    mfu: Optional[float] = None
    peak_memory_gib: Optional[float] = None
    losses: List[float] = field(default_factory=list)
    status: str = "ok"
    prediction: str = ""
    detail: Dict[str, object] = field(default_factory=dict)


def run_baseline(script: str, timeout: float) -> Outcome:
    """The baseline script's own Hugging Face bf16 variant, in the same run as ours."""
    try:
        proc = subprocess.run([sys.executable, script, "hf_bf16"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome("hf_llama_bf16", "baseline", status="timeout")
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not rows:
        return Outcome("hf_llama_bf16", "baseline", status=f"failed rc={proc.returncode}: {proc.stderr[-800:]}")
    row = rows[0]
    return Outcome(row["variant"], "baseline", row["tokens_per_s"], row["mfu_vs_989"], row["peak_mem_gib"], detail=row)


def run_variant(variant: Variant, shape: List[str], steps: int, warmup: int, out_dir: str, run_dir: str,
                timeout: float) -> Outcome:
    path = os.path.join(out_dir, f"bench_{variant.name}.json")
    command = [sys.executable, "-m", "megatron_sota.cli.benchmark", *shape, *variant.overrides,
               "--steps", str(steps), "--warmup", str(warmup), "--json", path, "--run-dir", run_dir]
    outcome = Outcome(variant.name, "project", prediction=variant.prediction)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        outcome.status = "timeout"
        return outcome
    if proc.returncode != 0 or not os.path.exists(path):
        outcome.status = f"failed rc={proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
        return outcome
    with open(path) as handle:
        result = json.load(handle)
    outcome.tokens_per_s, outcome.mfu = result["tokens_per_s"], result["mfu"]
    outcome.peak_memory_gib, outcome.losses = result["peak_memory_gib"], result["losses"]
    outcome.detail = {"breakdown_s": result["breakdown_s"], "layout": result["layout"], "step_time_s": result["step_time_s"]}
    return outcome


def check_losses(outcomes: List[Outcome], reference: str, first: int, rel_tol: float) -> None:
    """Marks a variant whose first losses differ from the reference's by more than rel_tol."""
    ref = next((o for o in outcomes if o.name == reference and o.status == "ok"), None)
    for o in outcomes:
        if o.kind != "project" or o.status != "ok" or ref is None:
            continue
        pairs = list(zip(o.losses[:first], ref.losses[:first]))
        worst = max((abs(a - b) / abs(b) for a, b in pairs), default=float("inf"))
        o.detail["loss_rel_diff"] = worst
        if worst > rel_tol:
            o.status = f"LOSS MISMATCH: first {first} losses differ from {reference} by {worst:.2e} > {rel_tol:g}"


def format_table(outcomes: List[Outcome]) -> str:
    base = next((o for o in outcomes if o.kind == "baseline" and o.tokens_per_s), None)
    lines = [f"{'variant':<38} {'tokens/s':>10} {'MFU':>7} {'vs HF':>7} {'peak GiB':>9} {'loss Δ':>9}  status"]
    for o in outcomes:
        ratio = f"{o.tokens_per_s / base.tokens_per_s:.3f}x" if base and o.tokens_per_s else "-"
        tps = f"{o.tokens_per_s:,.0f}" if o.tokens_per_s else "-"
        mfu = f"{o.mfu * 100:.1f}%" if o.mfu else "-"
        mem = f"{o.peak_memory_gib:.1f}" if o.peak_memory_gib is not None else "-"
        diff = o.detail.get("loss_rel_diff")
        lines.append(f"{o.name:<38} {tps:>10} {mfu:>7} {ratio:>7} {mem:>9} {f'{diff:.1e}' if diff is not None else '-':>9}  {o.status}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-script", default=None,
                        help="the Hugging Face baseline (shared/bench/gpu_baseline.py); required unless --cpu-smoke")
    parser.add_argument("--out", default="speed_results", help="folder for each variant's JSON and the summary")
    parser.add_argument("--run-dir", default=os.path.join("outputs", "benchmark"), help="the benchmarks' data cache")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=480, help="skip variants once this much time is spent")
    parser.add_argument("--variant-timeout-s", type=float, default=150)
    parser.add_argument("--loss-steps", type=int, default=3, help="first steps whose losses must match")
    parser.add_argument("--loss-rel-tol", type=float, default=1e-2, help="bf16 tolerance on those losses")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variant names")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny on CPU, no baseline: tests the driver itself")
    args = parser.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    outcomes: List[Outcome] = []
    shape = CPU_SHAPE if args.cpu_smoke else GPU_SHAPE
    if not args.cpu_smoke:
        if args.baseline_script is None:
            print("error: --baseline-script is required (the Hugging Face baseline), unless --cpu-smoke", file=sys.stderr)
            return 2
        if not os.path.exists(args.baseline_script):
            print(f"error: --baseline-script {args.baseline_script} does not exist", file=sys.stderr)
            return 2
        outcomes.append(run_baseline(args.baseline_script, args.variant_timeout_s))
        print(format_table(outcomes[-1:]), flush=True)
    for variant in VARIANTS:
        if args.only is not None and variant.name not in args.only:
            continue
        if time.time() - start > args.budget_s:
            outcomes.append(Outcome(variant.name, "project", status="skipped: out of time", prediction=variant.prediction))
            continue
        outcomes.append(run_variant(variant, shape, args.steps, args.warmup, args.out, args.run_dir, args.variant_timeout_s))
        print(f"# {variant.name}: {outcomes[-1].status} after {time.time() - start:.0f}s", flush=True)
    check_losses(outcomes, VARIANTS[0].name, args.loss_steps, args.loss_rel_tol)
    print(format_table(outcomes), flush=True)
    with open(os.path.join(args.out, "speed_summary.json"), "w") as handle:
        json.dump([o.__dict__ for o in outcomes], handle, indent=1)
    return 0 if all(o.status == "ok" or o.status.startswith("skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
