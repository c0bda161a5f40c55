"""The PPO/GRPO keys are checked with the rest of the config: every problem listed at once, before anything runs."""

from __future__ import annotations

import pytest

from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from tests.posttrain.examples import sft_job


def _problems(fsdp: str = "optim_grads_params", **posttrain) -> str:
    job = sft_job(**posttrain)
    job.parallel.pp, job.data.num_workers, job.model.num_layers, job.parallel.fsdp = 2, 2, 2, fsdp
    with pytest.raises(MegatronSotaError) as err:
        validate_job(job, 2, Machine(cuda=False, transformer_engine=False))
    return str(err.value)


def test_every_rl_problem_is_listed_at_once():
    message = _problems(objective="grpo", reward_model="rm", reward_function="exact_match", kl_estimator="k4",
                        kl_placement="advantage", samples_per_prompt=1, clip_range=1.5, lam=2.0, value_clip=0.0)
    for expected in (
        "posttrain.objective=grpo needs exactly one reward: posttrain.reward_model (a reward-model checkpoint) or "
        "posttrain.reward_function (exact_match, unit_tests); found both",
        "posttrain.kl_estimator must be one of k1, k2, k3, got 'k4'",
        "posttrain.kl_placement must be one of reward, loss, got 'advantage'",
        "posttrain.samples_per_prompt=1: GRPO compares responses within a group",
        "parallel.pp=2: grpo rollouts run the actor's chunk with a KV cache",
        "data.num_workers=2: grpo reads its rows from the rollout batch",
        "posttrain.clip_range must be in (0, 1), got 1.5",
        "posttrain.lam must be in [0, 1], got 2.0",
        "posttrain.value_clip must be > 0 or null, got 0.0",
        "parallel.fsdp=optim_grads_params with posttrain=grpo: rollouts generate with the training chunk's own weights",
    ):
        assert expected in message, expected
    assert "found neither" in _problems(fsdp="none", objective="ppo")


def test_pretraining_and_the_other_objectives_ignore_the_rl_keys():
    job = sft_job(kl_estimator="k4", samples_per_prompt=1)
    validate_job(job, 1, Machine(cuda=False, transformer_engine=False))
