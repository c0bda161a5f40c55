"""tools/benchmark.py --compare-hf: transformers' LlamaForCausalLM beside the trainer, same model, alternating."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch

from megatron_sota.config.compose import compose_job
from megatron_sota.model.param_count import count_params
from megatron_sota.perf.hf_baseline import HFTrainer, spec_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = ["model=tiny", "runtime.device=cpu", "train.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4"]


def test_the_transformers_side_is_the_jobs_model_and_optimizer():
    job = compose_job(SHAPE + ["optimizer.lr=1e-3", "optimizer.clip_grad=0.5"])
    spec = spec_for(job, 8064, torch.device("cpu"), torch.float32, num_microbatches=2, fused_adam=True, threads=1)
    trainer = HFTrainer(spec)
    # The same parameters as the megatron-core model (param_count's closed form), untied like the preset.
    assert sum(p.numel() for p in trainer.model.parameters()) == count_params(job.model, 8064).total
    assert trainer.model.config.num_key_value_heads == 2 and trainer.model.config.intermediate_size == 704
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["fused"]) == (1e-3, (0.9, 0.95), 0.1, True)
    losses = [trainer.step() for _ in range(3)]
    assert abs(losses[0] - math.log(8064)) < 0.5 and all(math.isfinite(loss) for loss in losses)
    assert all(p.grad is None for p in trainer.model.parameters())


@pytest.mark.slow
def test_compare_hf_prints_both_sides_and_the_median_ratio_of_its_rounds(tmp_path):
    path = tmp_path / "side.json"
    command = [sys.executable, "tools/benchmark.py", *SHAPE, "--compare-hf", "--steps", "2", "--rounds", "3",
               "--warmup", "2", "--json", str(path), "--run-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(path.read_text())
    assert (r["model"], r["device"], r["dtype"], r["tokens_per_step"], r["rounds"]) == ("tiny", "cpu", "float32", 256, 3)
    assert r["kernels"] == "no fusions"
    assert len(r["ours_step_times_s"]) == len(r["hf_step_times_s"]) == 6 and len(r["round_ratios"]) == 3
    for index, ratio in enumerate(r["round_ratios"]):
        ours, hf = (r[key][2 * index: 2 * index + 2] for key in ("ours_step_times_s", "hf_step_times_s"))
        assert math.isclose(ratio, statistics.median(hf) / statistics.median(ours), rel_tol=1e-9)
    assert math.isclose(r["ratio"], statistics.median(r["round_ratios"]), rel_tol=1e-9)
    assert math.isclose(r["ours_tokens_per_s"], 256 / statistics.median(r["ours_step_times_s"]), rel_tol=1e-9)
    assert f"ratio {r['ratio']:.3f}x transformers" in result.stdout


def test_compare_hf_refuses_a_bad_rounds_count(tmp_path):
    command = [sys.executable, "tools/benchmark.py", *SHAPE, "--compare-hf", "--rounds", "0", "--run-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--rounds must be >= 1, got 0" in result.stderr
