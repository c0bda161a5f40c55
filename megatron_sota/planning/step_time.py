"""Time of one training step of a layout on a cluster: compute, recompute, communication, pipeline bubble.

A roofline-style estimate from FLOPs, bytes and bandwidths; it must not claim more precision than its
efficiency figures, which are parameters (Efficiency) with their sources next to them.

Per micro-batch and pipeline rank (the slowest rank sets the pace; n = s/cp * b tokens on the rank)::

    matmuls      6 * (layer matmul params) * n / t  per layer, +1/3 with full recompute,
                 plus 6 * V * h * n / t for the output layer on the last rank
                 -> / (peak * matmul efficiency)
    attention    6 * heads * head_dim * s * n / t per layer: causal, what the kernels do
                 (+1/3 with full or selective recompute) -> / (peak * attention efficiency)
    element-wise passes * (bytes saved for backward) / HBM bandwidth (norms, RoPE, SwiGLU,
                 residuals, cross-entropy: memory-bound)
    TP           4 all-reduce equivalents of [s/cp, b, h] per layer (2 forward, 2 backward; 6 with
                 full recompute), ring: 2 (t-1)/t * bytes / link; not overlapped (local spec)
    PP           one [s/cp, b, h/t_sp] message each way per chunk; in the critical path
    CP           ring exchange: (cp-1) steps, each sending one rank's K,V block
                 (2 * n * kv * e / t); forward passes K,V, backward K,V and their gradients, a
                 recomputed attention (selective or full) K,V once more; hidden behind the
                 attention's compute up to its time, on the link of a group spanning tp*cp GPUs
                 (megatron-core orders ranks tp, cp, dp, pp)

Step = (m + (pp-1)/vpp) * slowest rank's micro-batch time (1F1B with its bubble)
     + DP gradient reduce-scatter and parameter all-gather not hidden (with overlap_grad_reduce and
       overlap_param_gather on, only the last micro-batch's backward and the first one's forward can
       hide them: megatron-core starts the reduction during the last micro-batch)
     + the optimizer step (memory-bound).

Megatron-FSDP (parallel.fsdp) moves DP collectives into every micro-batch (megatron_fsdp.py: with
optim_grads and optim_grads_params the gradients are reduce-scattered after every backward, not only
the last one's): optim communicates as the distributed optimizer; optim_grads reduce-scatters the
fp32 gradients each micro-batch and all-gathers the parameters once a step; optim_grads_params
all-gathers the stage's weights before each forward and again before each backward (it frees them
after the forward; a recomputed forward keeps them for its backward) and reduce-scatters the
gradients, every micro-batch, and gathers nothing after the optimizer step. Each micro-batch's
collectives hide behind its own forward (1/3 of its time) and backward (2/3); what sticks out
lengthens every micro-batch, the bubble's included. The first unit's gather, which nothing can
hide, is not counted.
MFU counts 6*N + 12*L*h*s per token (full attention, the GPU baseline's convention), divided by the
step time and the dense bf16 peak of every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_sota.config.model import ModelConfig
from megatron_sota.model.param_count import layer_params, train_flops_per_token
from megatron_sota.planning.cluster import ClusterSpec
from megatron_sota.planning.layout import ParallelLayout
from megatron_sota.planning.memory import layer_activation_bytes, params_on_rank

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Efficiency:
    matmul: float = 0.73
    """Achieved / peak for large bf16 GEMMs: 722.8 of 989.4 TFLOP/s for 8192^3 on the H200 (docs/performance.md)."""
    attention: float = 0.35
    """Achieved / peak of fused SDPA (FlashAttention-2 class) forward+backward on Hopper, head dim 128:
    ~350 TFLOP/s in the FlashAttention-2/-3 papers' H100 benchmarks. An assumption, not measured here."""
    elementwise_passes: float = 15.0
    """How many times the element-wise kernels read or write the bytes a layer saves for backward,
    forward and backward together. Calibrated on the one measured step in docs/performance.md
    (megatron-core local spec + SDPA, llama_1b3 shape, s=4096, b=4, bf16 on the H200: 44,177
    tokens/s, 42.9% MFU); tests/unit/test_planner.py checks that calibration."""
    comm: float = 0.8
    """Achieved / link bandwidth of NCCL collectives (nccl-tests bus bandwidth is ~75-85% of the link)."""
    dp_overlap: bool = True
    """parallel.overlap_grad_reduce and parallel.overlap_param_gather on (they are off by default in
    conf/parallel/): the DP collectives may hide behind the last micro-batch's backward and the first
    one's forward. Off: fully exposed."""
    optimizer_bytes_per_param: float = 32.0
    """HBM traffic of one Adam update per parameter: read+write fp32 master, exp_avg, exp_avg_sq, read
    the fp32 grad, write the bf16 param (4*6 + 4 + 2, rounded up)."""


@dataclass(frozen=True)
class StepTime:
    step_s: float
    compute_s: float
    """Matmuls, attention and element-wise kernels of all micro-batches on the slowest rank."""
    recompute_s: float
    """The part of compute_s spent recomputing forwards."""
    tp_comm_s: float
    pp_comm_s: float
    cp_comm_s: float
    bubble_s: float
    dp_comm_s: float
    """DP reduce-scatter/all-gather time not hidden behind compute."""
    optimizer_s: float
    tokens_per_step: int
    model_flops_per_token: float
    world_size: int
    peak_flops: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def tokens_per_day(self) -> float:
        return self.tokens_per_s * SECONDS_PER_DAY

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * self.model_flops_per_token / (self.world_size * self.peak_flops)

    def days_for(self, tokens: float) -> float:
        return tokens / self.tokens_per_day


@dataclass(frozen=True)
class _MicroBatch:
    compute_s: float
    recompute_s: float
    tp_s: float
    pp_s: float
    cp_s: float

    @property
    def total(self) -> float:
        return self.compute_s + self.tp_s + self.pp_s + self.cp_s


def _ring_s(bytes_: float, ranks: int, gb_s: float, eff: Efficiency, all_reduce: bool) -> float:
    """Ring collective: an all-reduce moves 2(n-1)/n of the buffer per GPU, a reduce-scatter or
    all-gather (n-1)/n."""
    if ranks <= 1:
        return 0.0
    factor = (2.0 if all_reduce else 1.0) * (ranks - 1) / ranks
    return factor * bytes_ / (gb_s * 1e9 * eff.comm)


def _microbatch(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, cluster: ClusterSpec, eff: Efficiency, rank: int
) -> _MicroBatch:
    """Forward+backward of one micro-batch through one pipeline rank's layers (all its chunks)."""
    t, cp, e = layout.tp, layout.cp, layout.bytes_per_element
    h, d, heads = model.hidden_size, model.head_dim, model.num_attention_heads
    tokens = layout.seq_length // cp * layout.micro_batch_size
    layers = model.num_layers // layout.pp
    peak = cluster.gpu.bf16_tflops * 1e12

    matmul = 6.0 * (layer_params(model) - 2 * h) * tokens / t  # norm weights do no matmul
    # Causal half of 12*h*s per token: each local query sees s/2 keys on average (CP balances the halves).
    attention = 6.0 * heads * d * layout.seq_length * tokens / t
    matmul_s, attention_s = matmul / (peak * eff.matmul), attention / (peak * eff.attention)
    memory_s = eff.elementwise_passes * layer_activation_bytes(model, layout) / (cluster.gpu.hbm_tb_s * 1e12)
    # A recomputed forward costs a third of forward+backward; selective reruns only SDPA's forward.
    recompute = {"full": (matmul_s + attention_s + memory_s) / 3, "selective": attention_s / 3}.get(layout.recompute, 0.0)
    compute = layers * (matmul_s + attention_s + memory_s + recompute)
    if rank == layout.pp - 1:
        logits_bytes = (4 + (e if e != 4 else 0)) * tokens * padded_vocab / t
        compute += 6.0 * padded_vocab * h * tokens / t / (peak * eff.matmul)
        compute += eff.elementwise_passes * logits_bytes / (cluster.gpu.hbm_tb_s * 1e12)

    hidden_bytes = tokens * h * e
    collectives = 6 if layout.recompute == "full" else 4
    tp_s = layers * collectives * _ring_s(hidden_bytes, t, cluster.link_gb_s(t), eff, all_reduce=True)

    pp_s = 0.0
    if layout.pp > 1:
        message = hidden_bytes / (t if layout.sp else 1)
        span = layout.tp * layout.cp * layout.dp * layout.pp  # consecutive stages are tp*cp*dp ranks apart
        pp_s = layout.vpp * 2 * message / (cluster.link_gb_s(span) * 1e9 * eff.comm)

    cp_s = layers * max(0.0, cp_ring_s(model, layout, cluster, eff) - attention_s)
    return _MicroBatch(compute, layers * recompute, tp_s, pp_s, cp_s)


def cp_ring_s(model: ModelConfig, layout: ParallelLayout, cluster: ClusterSpec, eff: Efficiency) -> float:
    """Seconds one layer's K,V blocks (and their gradients) travel around the CP ring in a micro-batch's
    forward and backward, before any overlap with the attention's compute; 0 at cp=1."""
    cp = layout.cp
    if cp == 1:
        return 0.0
    tokens = layout.seq_length // cp * layout.micro_batch_size
    kv_block = 2 * model.num_query_groups * model.head_dim * tokens * layout.bytes_per_element / layout.tp
    passes = 3 + (1 if layout.recompute in ("selective", "full") else 0)
    return passes * (cp - 1) * kv_block / (cluster.link_gb_s(layout.tp * cp) * 1e9 * eff.comm)


@dataclass(frozen=True)
class DpCollectives:
    """Seconds of data-parallel communication of one pipeline rank before any overlap."""

    step_reduce_s: float
    """Gradient all-reduce or reduce-scatter, once a step (after the last micro-batch's backward)."""
    step_gather_s: float
    """Parameter all-gather once a step (distributed optimizer, fsdp optim and optim_grads)."""
    microbatch_forward_s: float
    """Every micro-batch's forward: the weights' all-gather (fsdp optim_grads_params)."""
    microbatch_backward_s: float
    """Every micro-batch's backward: gradient reduce-scatter (fsdp optim_grads and optim_grads_params)
    and the weights' second all-gather (optim_grads_params)."""


def dp_collectives_s(layout: ParallelLayout, cluster: ClusterSpec, eff: Efficiency, params: int) -> DpCollectives:
    """The fp32 gradients (grad_reduce_in_fp32) and the params_dtype weights of `params` parameters
    over the dp*cp ranks, on the link of a group spanning tp*cp*dp GPUs (module docstring)."""
    ranks, link = layout.dp * layout.cp, cluster.link_gb_s(layout.tp * layout.cp * layout.dp)
    reduce_scatter = _ring_s(4 * params, ranks, link, eff, all_reduce=False)
    gather = _ring_s(layout.bytes_per_element * params, ranks, link, eff, all_reduce=False)
    if layout.fsdp == "optim_grads_params":
        return DpCollectives(0.0, 0.0, gather, gather + reduce_scatter)
    if layout.fsdp == "optim_grads":
        return DpCollectives(0.0, gather, 0.0, reduce_scatter)
    if layout.shards_optimizer:  # distributed optimizer, or fsdp=optim
        return DpCollectives(reduce_scatter, gather, 0.0, 0.0)
    return DpCollectives(_ring_s(4 * params, ranks, link, eff, all_reduce=True), 0.0, 0.0, 0.0)


def estimate_step_time(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, cluster: ClusterSpec, eff: Efficiency = Efficiency()
) -> StepTime:
    ranks = sorted({0, layout.pp - 1})  # middle ranks do the first rank's work without the embedding
    per_rank = [_microbatch(model, padded_vocab, layout, cluster, eff, r) for r in ranks]
    slowest = max(per_rank, key=lambda mb: mb.total)
    m = layout.num_microbatches
    params = max(params_on_rank(model, padded_vocab, layout, r)[0] for r in ranks)
    dp = dp_collectives_s(layout, cluster, eff, params)
    hide_backward, hide_forward = (2 / 3 * slowest.total, 1 / 3 * slowest.total) if eff.dp_overlap else (0.0, 0.0)
    # Per micro-batch (FSDP): each hides behind its own micro-batch; what sticks out repeats m times
    # and stretches the bubble. Per step: only the last micro-batch's backward and the first one's
    # forward can hide them.
    per_microbatch_s = max(0.0, dp.microbatch_forward_s - hide_forward) + max(0.0, dp.microbatch_backward_s - hide_backward)
    bubble_s = (layout.pp - 1) / layout.vpp * (slowest.total + per_microbatch_s)
    dp_s = m * per_microbatch_s + max(0.0, dp.step_reduce_s - hide_backward) + max(0.0, dp.step_gather_s - hide_forward)

    shard = params / (layout.dp * layout.cp if layout.shards_optimizer else 1)
    optimizer_s = eff.optimizer_bytes_per_param * shard / (cluster.gpu.hbm_tb_s * 1e12)

    step_s = m * slowest.total + bubble_s + dp_s + optimizer_s
    return StepTime(
        step_s=step_s,
        compute_s=m * slowest.compute_s,
        recompute_s=m * slowest.recompute_s,
        tp_comm_s=m * slowest.tp_s,
        pp_comm_s=m * slowest.pp_s,
        cp_comm_s=m * slowest.cp_s,
        bubble_s=bubble_s,
        dp_comm_s=dp_s,
        optimizer_s=optimizer_s,
        tokens_per_step=layout.global_batch_size * layout.seq_length,
        model_flops_per_token=train_flops_per_token(model, padded_vocab, layout.seq_length, causal=False),
        world_size=layout.world_size,
        peak_flops=cluster.gpu.bf16_tflops * 1e12,
    )


def budget_flops(model: ModelConfig, padded_vocab: int, seq_length: int, tokens: float) -> tuple[float, float]:
    """(6*N*D, 6*N*D + attention) for a token budget D, N = parameters doing matmuls (MFU convention)."""
    with_attention = train_flops_per_token(model, padded_vocab, seq_length, causal=False) * tokens
    attention = 12 * model.num_layers * model.num_attention_heads * model.head_dim * seq_length * tokens
    return with_attention - attention, with_attention
