"""The scale rehearsal (megatron_sota/rehearsal/rank.py, meta device over fake ranks) against the real thing: tiny and
gpt_125m built on 8 gloo ranks at TP=2, PP=2, VPP=2, DP=2 in bf16 with the distributed optimizer, one real optimizer
step, one real save. Per rank, parameters, DDP buffers and their bytes, master and Adam bytes must be equal; the
union of every rank's rehearsed checkpoint shards must be exactly what the save wrote (torch.distributed.checkpoint's
metadata). tiny saves everything (the optimizer's fully reshardable, model-space entries included); gpt_125m saves its
weights only, for time (its optimizer entries have the weights' sharding, which tiny checks). Neither model pads its
DDP buffers at this layout (every tensor is a multiple of 128 elements), so tiny is also built 200 wide, which does."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, List

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.integration.rehearsal_probes import (
    WORLD, real_rank_probe, rehearsal_job, rehearse_all, rehearsed_chunks, written_chunks,
)

pytestmark = pytest.mark.slow

SAME_PER_RANK = (
    "parameters", "grad_buffer_numels", "param_buffer_numels", "weight_bytes", "gradient_bytes", "master_bytes",
    "optimizer_state_bytes",
)
ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass
class Measured:
    model: str
    saved_optimizer: bool
    real: List[dict]
    rehearsed: List[Any]
    checkpoint_dir: str


CASES = {
    # id: model, its overrides, whether the save includes the optimizer
    "tiny": ("tiny", (), True),
    "tiny_padded": ("tiny", ("model.hidden_size=200",), True),
    "gpt_125m": ("gpt_125m", (), False),
}


@pytest.fixture(scope="module", params=list(CASES))
def measured(request, tmp_path_factory) -> Measured:
    model, overrides, save_optimizer = CASES[request.param]
    job = rehearsal_job(model, "bf16", *overrides)
    base = tmp_path_factory.mktemp(model)
    save_dir = str(base / "checkpoints")
    real = run_distributed(real_rank_probe, WORLD, job, str(base / "run"), save_dir, save_optimizer)
    return Measured(request.param, save_optimizer, real, rehearse_all(job), os.path.join(save_dir, "iter_0000001"))


def test_real_ranks_ran_bf16_with_adam(measured):
    """What the comparison stands on: bf16 weights, a finite first loss, Adam's moments from a real step."""
    for real in measured.real:
        assert real["param_dtypes"] == ["torch.bfloat16"]
        assert math.isfinite(real["loss"])
        assert {"exp_avg", "exp_avg_sq"} <= set(real["state_names"])


def test_static_terms_equal_the_real_ranks(measured):
    if measured.model == "tiny_padded":  # there for its padding: its buffers hold more elements than its parameters
        assert all(sum(r["grad_buffer_numels"]) > r["parameters"] for r in measured.real)
    for rank, (real, rehearsed) in enumerate(zip(measured.real, measured.rehearsed)):
        got = {key: getattr(rehearsed, key) for key in SAME_PER_RANK}
        want = {key: real[key] for key in SAME_PER_RANK}
        assert got == want, f"{measured.model} rank {rank}"


def test_checkpoint_shards_equal_the_real_save(measured):
    written, sizes = written_chunks(measured.checkpoint_dir)
    rehearsed = set().union(*(rehearsed_chunks(r.checkpoint_shards) for r in measured.rehearsed))
    if not measured.saved_optimizer:
        rehearsed = {c for c in rehearsed if not c[0].startswith("optimizer.")}
    else:
        assert any(c[0].startswith("optimizer.") for c in written)
    assert sorted(rehearsed - written) == [] and sorted(written - rehearsed) == []
    # Each written tensor is covered once by its pieces, so equal sets mean equal bytes; the rehearsal's own byte
    # counts (main replicas only: no piece twice across ranks) must add up to it.
    for key, size in sizes.items():
        assert sum(math.prod(c[2]) for c in written if c[0] == key) == math.prod(size), key
    written_bytes = sum(math.prod(c[2]) * ITEMSIZE[c[3]] for c in written)
    rehearsed_bytes = sum(
        s.nbytes for r in measured.rehearsed for s in r.checkpoint_shards
        if measured.saved_optimizer or not s.key.startswith("optimizer.")
    )
    assert rehearsed_bytes == written_bytes
