"""The cluster planner's arithmetic: layout rejections with reasons, memory breakdown, ranking, the
175B plan, and the CPU peak-memory meter it is validated with (tests/integration/test_planner_memory.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist

from megatron_sota.errors import MegatronSotaError
from megatron_sota.perf.memory_meter import PeakMemoryMeter
from megatron_sota.planning.cluster import build_cluster
from megatron_sota.planning.layout import FSDP, ParallelLayout, parse_layout
from megatron_sota.planning.memory import (
    cp_attention_backward_bytes,
    estimate_rank_memory,
    estimate_memory,
    inflight_chunks,
    layer_activation_bytes,
    model_state_bytes,
    persistent_buffer_bytes,
    planned_chunk_activations,
    stored_layer_bytes,
)
from megatron_sota.config.presets import load_model_preset
from megatron_sota.planning.report import format_best_per_sharding, verdict
from megatron_sota.planning.search import PlanRequest, SearchSpace, default_cp_sizes, evaluate, layout_problems, search
from megatron_sota.planning.step_time import Efficiency, cp_ring_s, dp_collectives_s, estimate_step_time
from megatron_sota.runtime.launch_env import free_port
from tests.tool_runner import run_tool

SOTA = load_model_preset("sota_175b")
GIB = 2**30


def _request(nodes: int = 128, gpu: str = "h100-80gb", gbs: int = 2048, seq: int = 8192) -> PlanRequest:
    return PlanRequest(model=SOTA, cluster=build_cluster(gpu, 8, nodes), seq_length=seq, global_batch_size=gbs)


def _layout(**kw) -> ParallelLayout:
    base = dict(tp=8, pp=8, vpp=1, dp=16, micro_batch_size=1, num_microbatches=128, seq_length=8192, sp=True, recompute="full")
    return ParallelLayout(**{**base, **kw})


@pytest.fixture(scope="module")
def plan_1024():
    return search(_request(128))


# --- PeakMemoryMeter on CPU -------------------------------------------------------------------


def test_meter_counts_each_storage_once_and_subtracts_frees():
    before = torch.empty(10_000)  # allocated before entry: not counted
    with PeakMemoryMeter(torch.device("cpu")) as meter:
        a = torch.empty(1000)  # 4000 bytes
        views = [a[10:20], a.view(10, 100), a.view(10, 100).t()]
        assert meter.current_bytes == 4000
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        assert (meter.current_bytes, meter.peak_bytes) == (8000, 8000)
        del a
        assert meter.current_bytes == 8000  # the views keep the storage alive
        del views
        assert (meter.current_bytes, meter.peak_bytes) == (4000, 8000)
        meter.reset_peak()
        assert meter.peak_bytes == 4000
        c = b * 2
        del c
        assert (meter.current_bytes, meter.peak_bytes) == (4000, 8000)
        before.add_(1)  # in place on a storage from before entry: nothing new
        assert meter.current_bytes == 4000
    del before


def test_meter_counts_tensors_made_by_gloo_collectives():
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        with PeakMemoryMeter(torch.device("cpu")) as meter:
            x = torch.ones(256)
            dist.all_reduce(x)  # in place
            assert meter.current_bytes == 1024
            gathered = [torch.empty(256)]
            dist.all_gather(gathered, x)
            assert meter.current_bytes == 2048 and gathered[0].sum().item() == 256
    finally:
        dist.destroy_process_group()


def test_meter_on_cuda_reads_the_allocator_above_the_entry_baseline(monkeypatch):
    stats = {"allocated": 1000, "peak": 5000}  # a stand-in for CUDA's caching allocator
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: stats.update(peak=stats["allocated"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: stats["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: stats["peak"])
    with PeakMemoryMeter(torch.device("cuda", 0)) as meter:
        stats.update(allocated=1500, peak=4000)
        assert (meter.current_bytes, meter.peak_bytes) == (500, 3000)
        meter.reset_peak()
        assert meter.peak_bytes == 500
        stats.update(peak=2500)
    stats.update(peak=9000)  # after the block: no longer counted
    assert meter.peak_bytes == 1500


# --- rejections with reasons ------------------------------------------------------------------


def test_tp_not_dividing_heads_or_query_groups_is_rejected_with_the_reason():
    _, problems = evaluate(_request(), _layout(tp=5, dp=25))
    messages = {p.kind: p.message for p in problems}
    assert messages["heads_not_divisible"] == "heads 96 not divisible by tp 5"
    assert messages["groups_not_divisible"] == "query groups 8 not divisible by tp 5"


def test_tp_across_nodes_is_rejected_with_the_reason(plan_1024):
    reasons = {r.message for r in plan_1024.rejections if r.kind == "tp_across_nodes"}
    assert "tp=16 > 8 GPUs per node: tensor parallel across nodes" in reasons
    assert all(p.layout.tp <= 8 for p in plan_1024.plans)


def test_tp_across_nodes_pays_the_inter_node_bandwidth():
    request = _request()
    across = estimate_step_time(SOTA, 131072, _layout(tp=16, dp=8), request.cluster)
    inside = estimate_step_time(SOTA, 131072, _layout(tp=8, dp=16), request.cluster)
    assert across.tp_comm_s > 5 * inside.tp_comm_s


def test_layout_over_the_gpu_memory_is_rejected_with_needed_and_usable_gib():
    plan, problems = evaluate(_request(), _layout(tp=1, pp=1, dp=1024, num_microbatches=2, sp=False, recompute="none"))
    (problem,) = problems
    assert problem.kind == "memory"
    assert problem.message == f"needs {plan.memory.total / GIB:.1f} GiB > 71.6 GiB usable (90% of 79.6 GiB H100-80GB SXM)"


def test_global_batch_not_divisible_by_mbs_times_dp_is_rejected(plan_1024):
    reasons = {r.message for r in plan_1024.rejections if r.kind == "batch_not_divisible"}
    assert "global batch 2048 not divisible by mbs*dp = 4*1024" in reasons
    _, problems = evaluate(_request(gbs=2000), _layout())
    assert [p.kind for p in problems] == ["batch_not_divisible"]


def test_layers_not_dividing_pp_times_vpp_are_rejected(plan_1024):
    assert "layers 104 not divisible by pp 16" in {r.message for r in plan_1024.rejections}
    _, problems = evaluate(_request(), _layout(vpp=3))
    assert [p.message for p in problems] == ["layers 104 not divisible by pp*vpp = 8*3"]


def test_parse_layout_names_the_valid_keys_for_a_typo():
    assert parse_layout("tp=8,pp=4,mbs=2,recompute=full,dopt=0") == ParallelLayout(
        tp=8, pp=4, micro_batch_size=2, recompute="full", distributed_optimizer=False
    )
    with pytest.raises(MegatronSotaError, match="cannot read 'tpp=8'.*micro_batch_size"):
        parse_layout("tpp=8")


# --- the memory model ---------------------------------------------------------------------------


def test_memory_breakdown_adds_up_to_the_total(plan_1024):
    for plan in plan_1024.plans[:20]:
        parts = plan.memory.breakdown_gib()
        total = parts.pop("total")
        assert sum(parts.values()) == pytest.approx(total)
        assert plan.memory.total <= _request().usable_bytes


def test_distributed_optimizer_shards_optimizer_states_over_dp():
    request = _request()
    sharded = estimate_memory(SOTA, 131072, _layout(distributed_optimizer=True))
    replicated = estimate_memory(SOTA, 131072, _layout(distributed_optimizer=False))
    assert sharded.optimizer * 16 == pytest.approx(replicated.optimizer, rel=1e-6)
    assert (sharded.weights, sharded.gradients) == (replicated.weights, replicated.gradients)
    assert replicated.optimizer == 12 * replicated.weights // 2  # fp32 master + Adam per bf16 param
    assert sharded.total < replicated.total < request.usable_bytes * 3


def test_full_recompute_keeps_only_layer_inputs_and_selective_only_drops_the_logsumexp():
    none, selective, full = (stored_layer_bytes(SOTA, _layout(recompute=r)) for r in ("none", "selective", "full"))
    assert full == 8192 * 12288 * 2 // 8  # [s, b, h] bf16, sequence-parallel over tp=8
    assert 0 < none - selective < none / 100
    assert full < none / 20


def test_interleaving_holds_the_korthikanti_first_stage_factor():
    pp, vpp = 8, 13
    layout = _layout(pp=pp, vpp=vpp)
    assert inflight_chunks(_layout(), 0) == pp and inflight_chunks(_layout(), pp - 1) == 1
    layers_held = inflight_chunks(layout, 0) * SOTA.num_layers // (pp * vpp)
    assert layers_held == pytest.approx(SOTA.num_layers * (1 + (pp - 1) / (pp * vpp)))


# --- context parallelism -----------------------------------------------------------------------


def _cp_layout(cp: int, **kw) -> ParallelLayout:
    return _layout(**{"seq_length": 32768, "cp": cp, "dp": 16 // cp, "recompute": "none", **kw})


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_cp_divides_what_a_layer_keeps_for_backward(recompute):
    """Every term falls as 1/cp; on top, without recompute, the ring attention keeps its merged output in fp32
    (8192 tokens a rank x 12 query heads x 128 channels a TP rank x 4 bytes): selective recompute drops it."""
    one, four = (stored_layer_bytes(SOTA, _cp_layout(cp, recompute=recompute)) for cp in (1, 4))
    merged_output = 8192 * 12 * 128 * 4 if recompute == "none" else 0
    assert four == one // 4 + merged_output
    assert layer_activation_bytes(SOTA, _cp_layout(4)) == layer_activation_bytes(SOTA, _cp_layout(1)) // 4 + 8192 * 12 * 128 * 4


def test_cp_ring_buffers_follow_the_closed_form():
    """sota_175b, seq 32768 over cp=4 at tp=8, bf16: 8192 tokens a rank, 1 KV group (128 channels) and
    12 query heads (1536 channels) a TP rank."""
    n, kv, q = 8192, 128, 1536
    kv_block = 2 * n * kv * 2  # K and V, bf16
    ring = 2 * kv_block + 2 * (2 * n * kv * 4) + n * q * 4  # blocks in use + arriving, fp32 dK/dV and dQ
    grads = n * (q + 2 * kv) * 2  # dQ, dK, dV in bf16
    assert cp_attention_backward_bytes(SOTA, _cp_layout(4)) == ring + grads == 100 * 2**20
    assert cp_attention_backward_bytes(SOTA, _cp_layout(1)) == 0


def test_cp_ring_buffers_set_the_layer_backward_peak_where_they_exceed_the_mlp_moments():
    """tiny (ffn 704) at seq 2048, cp=2, fp32: the ring's buffers outweigh the MLP's backward moments (SwiGLU's
    three [n, f] gradients the larger, n > h). The RoPE table (1024 positions x 64 channels, fp32) is kept besides."""
    tiny = load_model_preset("tiny")
    layout = ParallelLayout(cp=2, seq_length=2048, dtype="fp32", recompute="none")
    n = 1024
    fc2 = n * 704 * 4 + 704 * 256 * 4
    swiglu = 2 * n * 704 * 4
    ring = cp_attention_backward_bytes(tiny, layout)
    assert ring > swiglu > fc2
    grad_in, rope = n * 256 * 4, 1024 * 64 * 4
    memory = estimate_rank_memory(tiny, 128, layout, 0)  # a 128-token vocabulary: small logits
    assert memory.phase == "layer backward (CP attention backward)" and memory.transient == grad_in + ring + rope
    without_cp = estimate_rank_memory(tiny, 128, ParallelLayout(seq_length=1024, dtype="fp32"), 0)
    assert without_cp.phase == "layer backward (SwiGLU backward)"
    assert without_cp.transient == grad_in + swiglu + rope  # same tokens a rank, no ring


def test_a_rank_holds_its_in_flight_micro_batches_and_the_backward_of_one():
    """sota_175b's best 1024-GPU layout (tp4 pp8 cp4, no recompute): 1F1B keeps 8 micro-batches of the one chunk in
    flight on the first stage (7 warm-up forwards and one more), 1 on the last; the peak is one of them running
    backward, with the persistent buffers (the SP gather of 2048 tokens x 12288, bf16, and the RoPE table) on top."""
    layout = ParallelLayout(tp=4, pp=8, cp=4, dp=8, num_microbatches=256, seq_length=8192, sp=True, recompute="none")
    persistent = 2048 * 12288 * 2 + 4 * 2048 * 128
    assert persistent_buffer_bytes(SOTA, layout) == persistent
    for rank, in_flight in ((0, 8), (7, 1)):
        chunk = planned_chunk_activations(SOTA, 131072, layout, rank, 0)
        memory = estimate_rank_memory(SOTA, 131072, layout, rank)
        assert memory.phase == chunk.phase
        held = memory.activations + memory.logits + memory.transient - persistent
        assert held == (in_flight - 1) * chunk.stored_bytes + chunk.peak_bytes


def test_cp_ring_time_follows_the_closed_form_and_hides_behind_long_attention():
    cluster = _request().cluster
    selective = _cp_layout(2, recompute="selective")  # tp8 x cp2 spans 16 GPUs: the inter-node link
    kv_block = 2 * 8 * 128 * 16384 * 2 / 8
    expected = 4 * 1 * kv_block / (cluster.inter_node_gb_s * 1e9 * Efficiency().comm)  # fwd, bwd x2, recompute
    assert cp_ring_s(SOTA, selective, cluster, Efficiency()) == pytest.approx(expected)
    assert cp_ring_s(SOTA, _cp_layout(2), cluster, Efficiency()) == pytest.approx(expected * 3 / 4)
    inside = _cp_layout(2, tp=4, dp=16)  # tp4 x cp2 within a node: NVLink
    assert cp_ring_s(SOTA, inside, cluster, Efficiency()) < cp_ring_s(SOTA, _cp_layout(2), cluster, Efficiency()) / 2
    # At 32k the attention's compute hides the exchange; at 4k over 8 ranks across nodes it cannot.
    assert estimate_step_time(SOTA, 131072, _cp_layout(2), cluster).cp_comm_s == 0.0
    short = _layout(seq_length=4096, cp=8, dp=2, recompute="none")
    assert estimate_step_time(SOTA, 131072, short, cluster).cp_comm_s > 0.0


def test_default_search_tries_cp_while_ranks_keep_2048_tokens():
    assert default_cp_sizes(8192) == [1, 2, 4]
    assert default_cp_sizes(32768) == [1, 2, 4, 8, 16]
    assert default_cp_sizes(2048) == [1]


@pytest.mark.parametrize("seq, tokens", [(32768, 8_388_608), (204800, 8_192_000)])
def test_sota_175b_long_context_stages_on_1024_h100s_are_fastest_with_cp(seq, tokens):
    """The 32k and 200k stages (conf/experiment/sota_175b_32k, sota_175b_200k): at 32k a layout without
    CP fits only with full recompute, and runs slower; at 200k none fits without CP."""
    request = _request(128, seq=seq, gbs=tokens // seq)
    result = search(request)
    best = result.plans[0]
    assert best.layout.cp > 1 and best.memory.total <= request.usable_bytes
    assert 0.2 < best.time.mfu < 0.7
    without_cp = [p for p in result.plans if p.layout.cp == 1]
    assert all(p.layout.recompute == "full" and p.time.step_s > best.time.step_s for p in without_cp)
    assert bool(without_cp) == (seq == 32768)


# --- data-parallel sharding: Megatron-FSDP ---------------------------------------------------------

TINY = load_model_preset("tiny")


def _tiny_params(vocab: int = 1920) -> int:
    """tiny from first principles: 4 layers of h=256, 4 heads and 2 KV groups of 64, SwiGLU f=704,
    two RMSNorms each; untied embedding and output [V, h]; a final norm."""
    h, f, q, kv = 256, 704, 4 * 64, 2 * 2 * 64
    layer = h * (q + kv) + q * h + 3 * f * h + 2 * h
    return 4 * layer + 2 * vocab * h + h


def test_fsdp_memory_per_strategy_follows_the_closed_form_at_dp4():
    """tiny, fp32, dp=4: each strategy shards over the 4 ranks what Megatron-FSDP's buffers shard; its
    fp32 main copy exists even for fp32 params; optim_grads keeps its one gradient bucket whole through
    the backward, and optim_grads_params gathers every layer of a model this small (prefetch >= 5e8 elements)."""
    p = _tiny_params()
    shard = -(-p // 4)
    expected = {  # (weights, gradients, optimizer, gathered weights, gathered gradients)
        "none": (4 * p, 4 * p, 8 * shard, 0, 0),  # distributed optimizer, no master for fp32 params
        "optim": (4 * p, 4 * p, 12 * shard, 0, 0),
        "optim_grads": (4 * p, 4 * shard, 12 * shard, 0, 4 * p),
        "optim_grads_params": (4 * shard, 4 * shard, 12 * shard, 4 * p, 4 * p),
    }
    for fsdp, (w, g, o, gw, gg) in expected.items():
        layout = ParallelLayout(dp=4, seq_length=64, micro_batch_size=2, dtype="fp32", fsdp=fsdp)
        state = model_state_bytes(TINY, 1920, layout)
        assert (state.weights, state.gradients, state.optimizer, state.gathered_weights, state.gathered_gradients) == (w, g, o, gw, gg), fsdp
        memory = estimate_rank_memory(TINY, 1920, layout, 0)
        assert (memory.weights, memory.gradients, memory.optimizer) == (w, g, o)

    # The gathered units sit on top of the backward's peak: in the output layer's backward with this
    # vocabulary, in a layer's backward with 128 tokens of vocabulary (small logits).
    for vocab, phase in ((1920, "output-layer backward"), (128, "layer backward (fc2 backward)")):
        plain = ParallelLayout(dp=4, seq_length=64, micro_batch_size=2, dtype="fp32")
        zero3, none = (estimate_rank_memory(TINY, vocab, replace(plain, fsdp=f), 0) for f in ("optim_grads_params", "none"))
        assert zero3.phase == none.phase == phase
        assert zero3.transient == none.transient + 8 * _tiny_params(vocab)


def _sota_layer_on_tp8() -> int:
    """Elements of one sota_175b layer on a TP rank of 8: h=12288, 96 heads and 8 KV groups of 128, f=3h;
    matrices split, its two norms replicated."""
    h, f, q, kv = 12288, 3 * 12288, 96 * 128, 2 * 8 * 128
    return (h * (q + kv) + q * h + 3 * f * h) // 8 + 2 * h


def test_fsdp_gathers_a_window_of_layers_of_a_large_model():
    """sota_175b at tp=8, bf16, one stage of 104 layers over dp=128: a unit (layer) of u elements on a TP
    rank; the forward gathers it and prefetches until >= 5e8 more elements (4 layers in all); the
    gradients wait for their reduce-scatter in a queue of up to max(1e9, 2u) elements (plus the one
    being produced: 5 layers). The embedding and output layer [V/8, h] and the final norm are gathered whole."""
    h, u = 12288, _sota_layer_on_tp8()
    assert 4e8 > u > 5e8 / 3  # so 1 + ceil(5e8 / u) = 4 and 1 + floor(1e9 / u) = 5
    outside = 2 * 131072 * h // 8 + h
    layout = _layout(pp=1, dp=128, fsdp="optim_grads_params")
    state = model_state_bytes(SOTA, 131072, layout)
    assert state.gathered_weights == (4 * u + outside) * 2
    assert state.gathered_gradients == (5 * u + outside) * 4
    assert state.weights == -(-(104 * u + outside) // 128) * 2


def test_more_sharding_holds_less_and_one_dp_rank_shards_nothing():
    held = {f: model_state_bytes(SOTA, 131072, _layout(fsdp=f)).held for f in FSDP[1:]}
    assert held["optim"] > held["optim_grads"] > held["optim_grads_params"]
    assert held["optim"] == model_state_bytes(SOTA, 131072, _layout()).held  # bf16: the distributed optimizer
    one_rank = _layout(dp=1, num_microbatches=2048)
    none = estimate_memory(SOTA, 131072, one_rank)
    for fsdp in FSDP[1:]:
        assert estimate_memory(SOTA, 131072, replace(one_rank, fsdp=fsdp)) == none


def test_layout_spec_round_trips_and_names_the_fsdp_strategy():
    for fsdp in FSDP:
        layout = _layout(fsdp=fsdp, cp=2, vpp=13, dtype="fp32")
        assert parse_layout(layout.spec()) == layout
    assert _layout(fsdp="optim_grads_params").short() == "tp8 pp8 vpp1 cp1 dp16 mbs1 sp full zero3"
    assert parse_layout("tp=8,dopt=0").fsdp == "none"  # the spelling from before FSDP still reads
    with pytest.raises(MegatronSotaError, match="fsdp=zero3: expected one of none, optim"):
        parse_layout("fsdp=zero3")
    with pytest.raises(MegatronSotaError, match="always shards the optimizer"):
        parse_layout("fsdp=optim_grads,dopt=0")


def test_fsdp_weights_are_gathered_every_microbatch_forward_and_backward():
    """optim_grads_params: per micro-batch an all-gather of the stage's bf16 weights in the forward and
    another, with the fp32 gradients' reduce-scatter, in the backward; the distributed optimizer
    reduce-scatters and gathers once a step. Ring over dp=16 ranks spanning 128 GPUs: inter-node."""
    cluster, eff = _request().cluster, Efficiency(dp_overlap=False)
    params = 13 * _sota_layer_on_tp8() + 131072 * 12288 // 8 + 12288  # the last of 8 stages: output layer, final norm
    ring = 15 / 16 / (cluster.inter_node_gb_s * 1e9 * eff.comm)
    gather, reduce_scatter = 2 * params * ring, 4 * params * ring
    zero3 = dp_collectives_s(_layout(fsdp="optim_grads_params"), cluster, eff, params)
    assert (zero3.microbatch_forward_s, zero3.microbatch_backward_s) == pytest.approx((gather, gather + reduce_scatter))
    assert zero3.step_reduce_s == zero3.step_gather_s == 0.0
    dopt = dp_collectives_s(_layout(), cluster, eff, params)
    assert (dopt.step_reduce_s, dopt.step_gather_s, dopt.microbatch_forward_s, dopt.microbatch_backward_s) == pytest.approx(
        (reduce_scatter, gather, 0.0, 0.0)
    )
    # With nothing hidden, a step pays 128 micro-batches' gathers and reduce-scatters against one of each.
    assert estimate_step_time(SOTA, 131072, _layout(fsdp="optim_grads_params"), cluster, eff).dp_comm_s == pytest.approx(
        128 * (2 * gather + reduce_scatter)
    )
    assert estimate_step_time(SOTA, 131072, _layout(), cluster, eff).dp_comm_s == pytest.approx(gather + reduce_scatter)


def test_search_ranks_fsdp_layouts_with_fewer_pipeline_stages(plan_1024):
    zero3 = [p for p in plan_1024.plans if p.layout.fsdp == "optim_grads_params"]
    fsdp = [p for p in plan_1024.plans if p.layout.fsdp != "none"]
    # megatron-core 0.16.1 runs Megatron-FSDP without pipeline stages only (config/parallel.py FSDP_WITHOUT_PIPELINE).
    assert zero3 and {p.layout.pp for p in fsdp} == {1}
    staged = _layout(fsdp="optim_grads")
    reasons = {r.kind: r.message for r in layout_problems(_request(128), staged)}
    assert "without pipeline stages" in reasons["fsdp_with_pipeline"]
    assert "fsdp_with_pipeline" not in {r.kind for r in layout_problems(_request(128), _layout(fsdp="none"))}
    table = format_best_per_sharding(plan_1024, 15e12)
    assert {"dopt", "zero3"} <= {line.split()[9] for line in table.splitlines()[3:]}
    place = plan_1024.plans.index(zero3[0]) + 1
    assert f"{place:>3}  {zero3[0].layout.short()}" in table


# --- step time, ranking and the 175B plan -------------------------------------------------------


def test_step_time_calibration_reproduces_the_h200_baseline():
    """docs/performance.md: megatron-core local spec + SDPA, llama_1b3 shape, s=4096, b=4, bf16: 44,177 tokens/s."""
    request = PlanRequest(load_model_preset("llama_1b3"), build_cluster("h200", 1, 1), 4096, 4)
    plan, problems = evaluate(request, ParallelLayout(micro_batch_size=4, seq_length=4096, distributed_optimizer=False))
    assert problems == []
    assert plan.time.tokens_per_s == pytest.approx(44_177, rel=0.03)
    assert plan.time.mfu == pytest.approx(0.429, abs=0.015)


def test_ranking_puts_the_fastest_layout_first(plan_1024):
    steps = [p.time.step_s for p in plan_1024.plans]
    assert steps == sorted(steps)
    days = [p.time.days_for(15e12) for p in plan_1024.plans]
    assert days == sorted(days)
    assert 0.2 < plan_1024.plans[0].time.mfu < 0.7


@pytest.mark.parametrize("nodes", [128, 256])
def test_sota_175b_on_1024_and_2048_h100s_has_feasible_layouts(nodes):
    result = search(_request(nodes))
    assert len(result.plans) >= 10
    best = result.plans[0]
    assert best.layout.world_size == nodes * 8 and best.layout.tp <= 8
    assert best.layout.global_batch_size == 2048


def test_twice_the_gpus_nearly_halve_the_days(plan_1024):
    days_1024 = plan_1024.plans[0].time.days_for(15e12)
    days_2048 = search(_request(256)).plans[0].time.days_for(15e12)
    assert 0.45 < days_2048 / days_1024 < 0.6


def test_verdict_checks_the_spec_flops_and_months(plan_1024):
    v = verdict(_request(), plan_1024, 15e12)
    checks = v.checks()
    assert checks["params"] and checks["tokens"] and checks["gpus"] and checks["flops"]
    assert 1e25 < v.flops_6nd < v.flops < 2e25
    assert checks["days"] == (91 <= v.days <= 183)
    assert "Spec claim" in v.line()


def test_search_space_can_be_narrowed():
    result = search(_request(), SearchSpace(tp=(8,), pp=(8,), micro_batch_sizes=(1,), recompute=("full",)))
    assert {(p.layout.tp, p.layout.pp, p.layout.recompute) for p in result.plans} == {(8, 8, "full")}


# --- the command line ---------------------------------------------------------------------------


def test_plan_cli_prints_a_ranked_table_and_the_verdict(capsys):
    code, out, _ = run_tool("plan", ["--model", "sota_175b", "--nodes", "128", "--tokens", "15e12", "--top", "3", "--show-rejected"], capsys)
    assert code == 0
    assert "sota_175b on 1024 x H100-80GB SXM" in out and "Spec claim" in out
    assert "tp=9 > 8 GPUs per node: tensor parallel across nodes" in out


def test_plan_cli_explains_an_infeasible_layout(capsys):
    code, out, _ = run_tool("plan", ["--model", "sota_175b", "--nodes", "128", "--layout", "tp=16,pp=1,recompute=none"], capsys)
    assert code == 1
    assert "INFEASIBLE" in out and "tp=16 > 8 GPUs per node" in out and "query groups 8 not divisible by tp 16" in out
    assert "needs " in out


def test_plan_cli_json_lists_plans_and_the_verdict(capsys):
    code, out, _ = run_tool("plan", ["--model", "sota_175b", "--nodes", "256", "--top", "2", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and len(data["plans"]) == 2 and data["gpus"] == 2048
    assert set(data["plans"][0]["memory_gib"]) == {"weights", "gradients", "optimizer", "activations", "logits", "transient", "total"}
    assert data["verdict"]["checks"]["flops"] is True and data["verdict"]["days"] > 0
