"""The long-context recipe as shipped configs: the 32k and 200k stages' RoPE scaling and lengths, and
the sota_175b experiments' layouts, which must validate and be what the planner ranks (near) first."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import JobConfig, register_configs
from megatron_sota.config.machine import Machine
from megatron_sota.config.presets import load_model_preset
from megatron_sota.config.typed import to_job_config
from megatron_sota.config.validation import validate_job
from megatron_sota.conversion.hf_config import LLAMA3_ORIGINAL_MAX_POSITIONS
from megatron_sota.planning.cluster import build_cluster
from megatron_sota.planning.layout import ParallelLayout
from megatron_sota.planning.search import PlanRequest, SearchSpace, evaluate, search

STAGE1_LENGTH = 8192
GPU_MACHINE = Machine(cuda=True, transformer_engine=True)


def _job(overrides: list[str]) -> JobConfig:
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return to_job_config(compose(config_name="config", overrides=overrides))


@pytest.mark.parametrize("stage, length", [("stage1_8k", 8192), ("stage2_32k", 32768), ("stage3_hq", 32768), ("stage4_200k", 204800)])
def test_each_stage_scales_rope_by_its_length_over_stage_1s(stage, length, monkeypatch):
    """megatron-core's Llama 3 scaling takes 8,192 tokens as the original context: stage 1's length."""
    monkeypatch.setenv("MEGATRON_SOTA_DATA_ROOT", "/mnt/tokenized")
    job = _job([f"stage={stage}", "model=sota_175b"])
    assert (job.train.seq_length, job.model.max_position_embeddings) == (length, length)
    assert LLAMA3_ORIGINAL_MAX_POSITIONS == STAGE1_LENGTH
    expected = None if length == STAGE1_LENGTH else length / STAGE1_LENGTH
    assert job.model.rope_scaling_factor == expected
    assert job.model.rotary_base == load_model_preset("sota_175b").rotary_base
    validate_job(job, 1, GPU_MACHINE)


@pytest.mark.parametrize(
    "experiment, stage, tokens_per_step",
    [("sota_175b_32k", "stage2_32k", 8_388_608), ("sota_175b_200k", "stage4_200k", 8_192_000)],
)
def test_sota_175b_long_context_experiments_validate_on_1024_gpus_in_a_top_planner_layout(experiment, stage, tokens_per_step, tmp_path):
    job = _job([f"experiment={experiment}", f"checkpoint.init_from={tmp_path}"])
    reference = _job([f"stage={stage}", "model=sota_175b"])
    assert (job.model, job.train.seq_length, job.data) == (reference.model, reference.train.seq_length, reference.data)
    assert job.parallel.cp > 1 and job.checkpoint.init_from == str(tmp_path)
    assert job.train.global_batch_size * job.train.seq_length == tokens_per_step
    layout = validate_job(job, 1024, GPU_MACHINE)

    p, t, seq = job.parallel, job.train, job.train.seq_length
    request = PlanRequest(job.model, build_cluster("h100-80gb", 8, 128), seq, t.global_batch_size)
    planned = ParallelLayout(
        tp=p.tp, pp=p.pp, vpp=p.virtual_stages, cp=p.cp, dp=layout.dp, micro_batch_size=t.micro_batch_size,
        num_microbatches=layout.num_microbatches, seq_length=seq, sp=p.sp, recompute=t.recompute,
        distributed_optimizer=p.distributed_optimizer,
    )
    plan, problems = evaluate(request, planned)
    assert problems == []
    # Among DDP layouts (what the experiment sets): at 200k the planner ranks a Megatron-FSDP layout first.
    best = search(request, SearchSpace(fsdp=("none",))).plans[0]
    assert plan.time.step_s <= 1.05 * best.time.step_s  # within 5% of the planner's first
