"""The scale rehearsal at full size, checked in-process against closed forms: sota_175b at the planner's best 1024-GPU
layout, one rank of the first, a middle and the last pipeline stage; layouts that cannot work are refused with the
real run's own message (the trainer's check_inputs), by layout_problems and by the CLI; the CLI's JSON is
rehearse_rank's report."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from megatron_sota.config.compose import compose_job
from megatron_sota.config.presets import load_model_preset
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.gpt_builder import padded_vocab_size
from megatron_sota.model.param_count import count_params
from megatron_sota.rehearsal.rank import layout_problems, rehearse_rank, stage_ranks
from megatron_sota.rehearsal.verify import layout_job

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BF16, FP32 = 2, 4


def _planner_best(model: str, nodes: int):
    """The planner's request and the layout it ranks first (the search tools/plan.py prints)."""
    from megatron_sota.planning.cluster import build_cluster
    from megatron_sota.planning.search import PlanRequest, search

    preset = load_model_preset(model)
    request = PlanRequest(
        model=preset, cluster=build_cluster("h100-80gb", 8, nodes), seq_length=preset.max_position_embeddings,
        global_batch_size=2**24 // preset.max_position_embeddings,
    )
    return request, search(request).plans[0].layout


@pytest.fixture(scope="module")
def sota_best():
    request, best = _planner_best("sota_175b", 128)
    job = layout_job(request, best)  # the training overrides plan.py --verify rehearses
    layout = dataclasses.asdict(best)
    world = best.world_size
    assert world == 1024
    return layout, job, world


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_sota_175b_stage_matches_closed_forms(sota_best, where):
    layout, job, world = sota_best
    tp, pp, dp, cp = layout["tp"], layout["pp"], layout["dp"], layout["cp"]
    stage = {"first": 0, "middle": pp // 2, "last": pp - 1}[where]
    start = time.perf_counter()
    report = rehearse_rank(job, world, stage_ranks(job, world)[stage], checkpoint=True)
    seconds = time.perf_counter() - start
    print(f"sota_175b rank {report.rank} (stage {stage}) rehearsed in {seconds:.1f} s")

    model = load_model_preset("sota_175b")
    padded = padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by, tp)
    assert report.padded_vocab == padded
    assert report.coordinates == {"tp": 0, "pp": stage, "cp": 0, "dp": 0}
    # Parameters: the stage's count with everything but the norms split over TP (the norms are replicated).
    layers = model.num_layers // pp
    norms = layers * 2 * model.hidden_size + (model.hidden_size if stage == pp - 1 else 0)
    stage_params = count_params(model, padded, pp).per_stage[stage]
    assert report.parameters == (stage_params - norms) // tp + norms
    assert report.chunk_layers == [(stage * layers + 1, (stage + 1) * layers)]
    # fp32 gradient buffers of bf16 parameters the distributed optimizer shards over dp*cp ranks.
    grad_numel = sum(report.grad_buffer_numels)
    assert report.param_buffer_numels == report.grad_buffer_numels
    assert report.gradient_bytes == FP32 * grad_numel >= FP32 * report.parameters
    assert report.weight_bytes == BF16 * grad_numel
    # Padding aligns each parameter to 64 elements and each bucket to the dp*cp ranks: small next to the stage.
    assert grad_numel - report.parameters < 1e-4 * report.parameters
    assert report.master_bytes == FP32 * grad_numel // (dp * cp)
    assert report.optimizer_state_bytes == 2 * report.master_bytes
    # Checkpoint: this rank (tp, cp, dp rank 0) writes each of its tensors in bf16 and the fully reshardable optimizer
    # entries (fp32 parameter, exp_avg, exp_avg_sq) in model space, unpadded.
    keys = {s.key for s in report.checkpoint_shards}
    assert ("embedding.word_embeddings.weight" in keys) == (stage == 0)
    assert ("output_layer.weight" in keys) == (stage == pp - 1)
    assert ("decoder.final_layernorm.weight" in keys) == (stage == pp - 1)
    assert report.checkpoint_bytes == (BF16 + 3 * FP32) * report.parameters
    assert seconds < 30


def _real_run_message(job, world: int) -> str:
    """What the trainer says before building anything (training/state.py check_inputs, the trainer's first check)."""
    from megatron_sota.training.state import check_inputs

    with pytest.raises(MegatronSotaError) as err:
        check_inputs(job, world)
    return str(err.value)


BROKEN = {
    # id: overrides, world size
    "layers_not_divisible": (["model=sota_175b", "parallel.tp=4", "parallel.pp=8", "parallel.vpp=2",
                              "train.seq_length=8192", "train.global_batch_size=2048", "train.micro_batch_size=1"],
                             1024),
    "heads_not_divisible": (["model=sota_175b", "parallel.tp=5", "parallel.pp=8", "train.seq_length=8192",
                             "train.global_batch_size=2048", "train.micro_batch_size=1"], 1280),
    "world_not_divisible": (["model=tiny", "parallel.tp=2", "parallel.pp=2"], 6),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_layout_reported_with_the_real_message(case):
    overrides, world = BROKEN[case]
    job = compose_job(overrides)
    real = _real_run_message(job, world)
    problems = layout_problems(job, world)
    assert problems
    assert "invalid configuration:\n  - " + "\n  - ".join(problems) == real
    with pytest.raises(MegatronSotaError) as err:
        rehearse_rank(job, world, 0, checkpoint=False)
    assert str(err.value) == real


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "rehearse.py"), *args], capture_output=True, text=True, env=env,
        timeout=120,
    )


def test_cli_refuses_a_broken_layout_with_exit_code_1():
    overrides, world = BROKEN["layers_not_divisible"]
    done = _cli("--world-size", str(world), "--json", "--no-activations", *overrides)
    assert done.returncode == 1, done.stderr
    real = _real_run_message(compose_job(overrides), world)
    problems = json.loads(done.stdout)["problems"]
    assert "invalid configuration:\n  - " + "\n  - ".join(problems) == real
    assert all(problem in done.stderr for problem in problems)


@pytest.mark.slow  # a subprocess: ~10 s of imports on 2 cores
def test_cli_json_is_the_rehearsal():
    overrides = ["model=tiny", "parallel.tp=2", "parallel.pp=2", "parallel.vpp=2", "precision.dtype=bf16",
                 "train.global_batch_size=8", "train.micro_batch_size=1"]
    done = _cli("--world-size", "8", "--rank", "5", "--json", "--no-activations", *overrides)
    assert done.returncode == 0, done.stderr
    [got] = json.loads(done.stdout)["ranks"]
    want = rehearse_rank(compose_job(overrides), 8, 5, checkpoint=True)
    rank = got["rank"]
    same = ("rank", "world_size", "coordinates", "padded_vocab", "parameters", "weight_bytes", "gradient_bytes",
            "master_bytes", "optimizer_state_bytes", "grad_buffer_numels", "param_buffer_numels", "save_host_bytes")
    for key in same:
        assert rank[key] == getattr(want, key), key
    assert [tuple(span) for span in rank["chunk_layers"]] == want.chunk_layers
    assert rank["checkpoint_shards"] == len(want.checkpoint_shards)
    assert rank["checkpoint_bytes"] == want.checkpoint_bytes and rank["static_bytes"] == want.static_bytes
    assert got["activations"] is None and rank["build_seconds"] > 0
