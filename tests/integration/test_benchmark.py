"""tools/benchmark.py on CPU: it times the trainer's real step and its numbers agree with each other."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from tests.tool_runner import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = ["model=tiny", "runtime.device=cpu", "train.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4"]
KEYS = {
    "model", "device", "layout", "steps", "warmup", "tokens_per_step", "step_time_s", "step_times_s", "tokens_per_s",
    "tokens_per_s_per_device", "flops_per_token", "flops_per_token_causal", "tflops_per_device",
    "tflops_per_device_causal", "peak_tflops", "mfu", "mfu_causal", "peak_memory_gib", "breakdown_s", "losses",
    "flop_formula",
}


def tiny_flops_per_token(seq: int) -> tuple[int, int]:
    """conf/model/tiny.yaml by hand: 4 layers, hidden 256, 4 heads of 64 in 2 KV groups, SwiGLU 704,
    vocabulary 8000 padded to 8064 (a multiple of 128); the output layer counts, the input embedding not."""
    layer = 256 * 256 + 2 * 256 * 128 + 256 * 256 + 3 * 256 * 704
    matmul = 4 * layer + 8064 * 256
    return 6 * matmul + 12 * 4 * 256 * seq, 6 * matmul + 6 * 4 * 256 * seq


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    command = [sys.executable, "tools/benchmark.py", *SHAPE, "--steps", "2", "--warmup", "2", "--peak-tflops", "0.5",
               "--json", str(path), "--run-dir", str(path.parent)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(path.read_text()), result.stdout


@pytest.mark.slow
def test_json_has_every_key_and_consistent_numbers(tiny_result):
    r, stdout = tiny_result
    assert set(r) == KEYS
    assert r["tokens_per_step"] == 4 * 64 and r["steps"] == 2 and len(r["step_times_s"]) == 2
    full, causal = tiny_flops_per_token(64)
    assert (r["flops_per_token"], r["flops_per_token_causal"]) == (full, causal)
    assert math.isclose(r["step_time_s"], sum(r["step_times_s"]) / 2, rel_tol=1e-9)
    assert math.isclose(r["tokens_per_s"], 256 / r["step_time_s"], rel_tol=1e-9)
    assert math.isclose(r["tflops_per_device"], r["tokens_per_s"] * full / 1e12, rel_tol=1e-9)
    assert math.isclose(r["mfu"], r["tflops_per_device"] / 0.5, rel_tol=1e-9)
    assert math.isclose(r["mfu_causal"], r["tflops_per_device_causal"] / 0.5, rel_tol=1e-9)
    phases = r["breakdown_s"]
    assert {"forward", "backward", "optimizer", "zero_grad", "data", "forward_backward"} <= set(phases)
    assert 0 < phases["forward"] < phases["forward_backward"] and phases["optimizer"] > 0
    # The step has its own clock: its phases lie inside it and account for nearly all of it.
    phase_sum = phases["zero_grad"] + phases["forward_backward"] + phases["optimizer"]
    assert 0.9 * r["step_time_s"] <= phase_sum <= r["step_time_s"]
    assert r["layout"]["tp"] == 1 and r["layout"]["num_microbatches"] == 2 and r["layout"]["dtype"] == "float32"
    assert "tokens/s" in stdout and "MFU" in stdout


def test_step_time_is_measured_around_the_step_not_summed_from_its_phases(monkeypatch):
    from megatron_sota.perf import benchmark

    def step_with_work_outside_its_phases(state, timer):
        with timer.phase("forward_backward"):
            time.sleep(0.02)
        time.sleep(0.03)
        return SimpleNamespace(loss=1.5)

    monkeypatch.setattr(benchmark, "_step", step_with_work_outside_its_phases)
    losses = []
    step_times, phases = benchmark._timed_steps(SimpleNamespace(session=SimpleNamespace(device=torch.device("cpu"))), 2, losses)
    assert losses == [1.5, 1.5] and len(step_times) == 2
    assert all(seconds >= 0.05 for seconds in step_times), step_times
    assert 0.02 <= phases["forward_backward"] < min(step_times)


@pytest.mark.slow
def test_peak_memory_holds_at_least_weights_gradients_and_adam_states(tiny_result):
    r, _ = tiny_result
    # fp32: parameter + main gradient + two Adam moments = 16 bytes per parameter, before any activation.
    params = 4 * (256 * 256 * 2 + 2 * 256 * 128 + 3 * 256 * 704 + 2 * 256) + 2 * 8064 * 256 + 256
    assert r["peak_memory_gib"] * 2**30 >= 16 * params
    assert r["peak_memory_gib"] * 2**30 < 16 * params * 3, "more than 3x the static memory for a 64-token micro-batch"


@pytest.mark.slow
def test_losses_are_the_trainers_own(tiny_result, tmp_path):
    """The benchmark steps the same model on the same batches as `pretrain` does."""
    from megatron_sota.config.compose import compose_job
    from megatron_sota.training.trainer import pretrain

    r, _ = tiny_result
    job = compose_job(SHAPE)
    # The benchmark sizes the data for warm-up + timed steps + as many forward passes.
    train = dataclasses.replace(job.train, iters=r["warmup"] + 2 * r["steps"], eval_interval=0)
    job = dataclasses.replace(job, train=train, checkpoint=dataclasses.replace(job.checkpoint, save_at_end=False))
    summary = pretrain(job, str(tmp_path / "run"))
    n = len(r["losses"])
    assert n == r["warmup"] + r["steps"]
    assert summary.losses[:n] == pytest.approx(r["losses"], rel=1e-6)


@pytest.mark.slow
def test_pipeline_parallel_under_torchrun(tmp_path):
    path = tmp_path / "pp2.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "tools/benchmark.py", *SHAPE,
               "parallel.pp=2", "--steps", "2", "--warmup", "2", "--json", str(path), "--run-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(path.read_text())
    assert r["layout"]["pp"] == 2 and r["layout"]["world_size"] == 2
    assert r["tokens_per_s_per_device"] == pytest.approx(r["tokens_per_s"] / 2)
    assert r["mfu"] is None  # no peak known on CPU
    assert result.stdout.count("benchmark tiny on cpu") == 1, "only rank 0 reports"


def test_bad_arguments_fail_with_one_line(capsys):
    code, _, err = run_tool("benchmark", ["model=tiny", "--warmup", "1"], capsys)
    assert code == 2 and "--warmup must be >= 2" in err
    code, _, err = run_tool("benchmark", ["model=tiny", "train.iterz=3"], capsys)
    assert code == 2 and "train.iterz" in err
