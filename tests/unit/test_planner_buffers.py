"""planning/buffers.py against the real thing: megatron-core's own buffer class, and whole ranks built
as the trainer builds them (model chunks, DDP, optimizer) on gloo.

The models have sizes that are not multiples of 64 (hidden 200, fc2 rows of 150) so that the
distributed optimizer's alignment padding falls between parameters and inside data-parallel slices.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
import yaml

from megatron_sota.config.files import conf_dir
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.model.gpt_builder import padded_vocab_size
from megatron_sota.model.param_count import ParamShape, count_params
from megatron_sota.planning.buffers import chunk_buffer, fullest_rank_buffers, rank_buffers, rank_chunk_parameters, shard_elements
from megatron_sota.planning.layout import ParallelLayout
from megatron_sota.planning.memory import estimate_rank_memory, model_state_bytes
from megatron_sota.runtime.local_ranks import run_distributed
from tests.buffer_probes import built_rank_buffers, real_buffer_layouts

ODD = ModelConfig(num_layers=4, hidden_size=200, ffn_hidden_size=300, num_attention_heads=4, num_query_groups=2, vocab_size=1000)


def _cases():
    """Parameter lists (registration order) with odd sizes; the tied embedding first (a first stage) or
    the tied output weight last (a last stage), over 1, 3 and 32 data-parallel ranks, with and without
    the distributed optimizer, in one bucket or in buckets of about 1000 elements."""
    rng = random.Random(25)
    cases = []
    for size in (1, 3, 32):
        for dopt in (True, False):
            for bucket_size in (None, 1000):
                for shared_at in (None, 0, -1):
                    shapes = [(rng.randint(1, 700), False) for _ in range(rng.randint(2, 9))]
                    if shared_at is not None:
                        shapes[shared_at] = (rng.randint(500, 3000), True)
                    cases.append((shapes, size, dopt, bucket_size))
    return cases


@pytest.mark.slow
def test_buffer_layout_equals_megatron_cores_buffer_and_optimizer_slices():
    """One gloo rank builds megatron-core's _ParamAndGradBuffer for 36 parameter lists (~10 s alone,
    mostly starting the rank; ~6 s after another test started the ranks' server)."""
    cases = _cases()
    real = run_distributed(real_buffer_layouts, 1, cases)[0]
    for (shapes, size, dopt, bucket_size), built in zip(cases, real):
        params = [ParamShape(str(i), numel, shared) for i, (numel, shared) in enumerate(shapes)]
        planned = chunk_buffer(params, size, dopt, bucket_size)
        case = (shapes, size, dopt, bucket_size)
        assert planned.numel == built["numel"] == built["grad_numel"], case
        assert sorted(planned.params) == built["params"], case
        assert list(planned.buckets) == built["buckets"], case
        if dopt:
            assert shard_elements(planned, size) == built["shards"], case
    # The cases do reach padding: some buffer is larger than its parameters, some slices differ.
    assert any(r["numel"] > sum(n for n, _ in c[0]) for c, r in zip(cases, real))
    assert any(len(set(r["shards"])) > 1 for r in real)
    assert any(len(r["buckets"]) > 2 for r in real)


def _compare_with_built(model: ModelConfig, parallel: ParallelConfig, dtype: str, padded: bool = True) -> list:
    """Builds every rank of tp*pp*2 (dp=2) and compares it with rank_buffers; returns the built ranks."""
    vocab = padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by, parallel.tp)
    world = parallel.tp * parallel.pp * 2
    layout = ParallelLayout(
        tp=parallel.tp, pp=parallel.pp, vpp=parallel.vpp or 1, dp=world // (parallel.tp * parallel.pp),
        distributed_optimizer=parallel.distributed_optimizer, dtype=dtype,
    )
    ranks = run_distributed(built_rank_buffers, world, model, parallel, dtype, vocab)
    for built in ranks:
        planned = rank_buffers(model, vocab, layout, built["pipeline_rank"], built["dp_rank"], parallel.overlap_grad_reduce)
        where = (built["pipeline_rank"], built["tp_rank"], built["dp_rank"])
        chunks = rank_chunk_parameters(model, vocab, layout, built["pipeline_rank"])
        assert [[(p.name, p.numel) for p in c] for c in chunks] == built["chunk_params"], where
        assert planned.parameters == sum(n for chunk in built["chunk_params"] for _, n in chunk), where
        assert [[n] for n in planned.grad_buffer_numels] == built["grad_buffer_numels"], where
        assert [[list(b)] for b in planned.bucket_numels] == built["bucket_numels"], where
        assert planned.gradients == built["grad_buffer_bytes"], where
        weights = built["param_buffer_bytes"] if parallel.distributed_optimizer else built["param_bytes"]
        assert planned.weights == weights, where
        assert planned.optimizer_elements == built["optimizer_elements"], where
        assert planned.master == 4 * built["master_elements"], where
    if parallel.distributed_optimizer and padded:  # padding moves parameter elements between data-parallel ranks
        stepped = {(r["pipeline_rank"], r["dp_rank"]): r["optimizer_elements"] for r in ranks}
        assert len(set(stepped.values())) > parallel.pp, stepped
        for p in range(parallel.pp):
            fullest = fullest_rank_buffers(model, vocab, layout, p, parallel.overlap_grad_reduce)
            assert fullest.optimizer_elements == max(v for (q, _), v in stepped.items() if q == p)
    return ranks


def _preset(name: str) -> ModelConfig:
    with open(os.path.join(conf_dir("model"), f"{name}.yaml")) as handle:
        return ModelConfig(**yaml.safe_load(handle))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["odd", "tiny"])
def test_rank_buffers_equal_a_built_tp2_pp2_vpp2_dp2_rank_in_bf16(name):
    """8 gloo ranks (~2 s once the ranks' server runs): the distributed optimizer over untied weights,
    bf16 with fp32 master copies; the odd-sized model and the tiny preset (whose sizes need no padding)."""
    model = ODD if name == "odd" else _preset(name)
    _compare_with_built(model, ParallelConfig(tp=2, pp=2, vpp=2, distributed_optimizer=True), "bf16", padded=name == "odd")


@pytest.mark.slow
def test_rank_buffers_equal_a_built_rank_with_tied_weights_and_without_distributed_optimizer():
    """Tied embedding over pp=2 (the shared weight's own bucket) in fp32 with the distributed optimizer,
    then bf16 without it (master copies and Adam states of every parameter); 4 ranks each (~12 s)."""
    tied = replace(ODD, untie_embeddings_and_output_weights=False)
    _compare_with_built(tied, ParallelConfig(tp=1, pp=2, vpp=2, distributed_optimizer=True), "fp32")
    _compare_with_built(tied, ParallelConfig(tp=2, pp=1, distributed_optimizer=False), "bf16")


@pytest.mark.slow
def test_overlapped_grad_reduce_buckets_only_the_first_pipeline_ranks_first_chunk():
    """overlap_grad_reduce: buckets close at 4e7 elements, but only on pipeline rank 0. An untied output
    layer of 200064 x 200 > 4e7 elements comes first in the buffer (reverse order): pp=1 splits there,
    the last stage of pp=2 does not (its first stage's embedding comes last, one bucket either way).
    fp32, 2 and 4 ranks of about 0.7 GB each (~10 s)."""
    big = replace(ODD, vocab_size=200_001)
    single = _compare_with_built(big, ParallelConfig(pp=1, overlap_grad_reduce=True), "fp32")
    assert len(single[0]["bucket_numels"][0][0]) == 2
    staged = _compare_with_built(big, ParallelConfig(pp=2, overlap_grad_reduce=True), "fp32")
    assert all(len(r["bucket_numels"][0][0]) == 1 for r in staged)


def test_parameters_add_up_to_the_models_count_over_pipeline_ranks():
    """Summed over pipeline ranks at tp=1 the chunks hold the model, plus the last stage's copy of a tied
    embedding; a closed form (param_count.count_params) counts the same model another way."""
    for model in (ODD, replace(ODD, untie_embeddings_and_output_weights=False)):
        for pp, vpp in ((1, 1), (2, 1), (2, 2), (4, 1)):
            layout = ParallelLayout(pp=pp, vpp=vpp, dp=1)
            held = sum(rank_buffers(model, 1024, layout, r, 0).parameters for r in range(pp))
            copy = 1024 * model.hidden_size if not model.untie_embeddings_and_output_weights and pp > 1 else 0
            assert held == count_params(model, 1024).total + copy


def test_planner_static_terms_are_those_of_the_fullest_data_parallel_rank():
    layout = ParallelLayout(tp=2, pp=2, vpp=2, dp=3, dtype="bf16", seq_length=64)
    for rank in range(2):
        each = [rank_buffers(ODD, 1024, layout, rank, d) for d in range(3)]
        state = model_state_bytes(ODD, 1024, layout, rank)
        memory = estimate_rank_memory(ODD, 1024, layout, rank)
        assert len({b.optimizer for b in each}) > 1  # padding makes the slices differ here
        assert (state.weights, state.gradients, state.optimizer) == (each[0].weights, each[0].gradients, max(b.optimizer for b in each))
        assert (memory.weights, memory.gradients, memory.optimizer) == (state.weights, state.gradients, state.optimizer)
        assert each[0].weights == 2 * sum(each[0].grad_buffer_numels) > 2 * each[0].parameters
