"""rehearsal.init_cost: one layer's real initialisation timed at the job's layout, extrapolated to the rank's layers."""

from __future__ import annotations

import pytest

from megatron_sota.config.job import JobConfig
from megatron_sota.config.presets import load_model_preset
from megatron_sota.errors import MegatronSotaError
from megatron_sota.rehearsal.init_cost import time_layer_init


def _tiny(**parallel) -> JobConfig:
    job = JobConfig()
    job.model = load_model_preset("tiny")
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job


def test_first_and_last_stage_ranks_get_their_layers_embedding_and_output():
    job = _tiny(tp=2, pp=2, vpp=2)
    per_stage = job.model.num_layers // 2
    # megatron-core's default order puts TP innermost and PP outermost: ranks 0-3 are stage 0 of 8 (dp 2).
    first, last = time_layer_init(job, 0, 8), time_layer_init(job, 7, 8)
    assert first.layers == last.layers == per_stage
    assert first.embedding_seconds > 0 and first.output_seconds == 0
    assert last.embedding_seconds == 0 and last.output_seconds > 0
    assert first.seconds_per_layer > 0
    assert first.total_seconds == pytest.approx(first.seconds_per_layer * per_stage + first.embedding_seconds)


def test_a_world_the_layout_does_not_divide_is_refused():
    with pytest.raises(MegatronSotaError, match="not a multiple"):
        time_layer_init(_tiny(tp=2, pp=2), 0, 6)
