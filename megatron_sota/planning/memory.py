"""Per-GPU peak memory of a training layout: weights, gradients, optimizer states, activations, logits.

Derived from what this project's trainer allocates (megatron-core DDP with fp32 main grads, Adam,
the local layer spec with our RMSNorm and SDPA core attention); it must not build anything.

Activations saved for backward by one transformer layer, for one micro-batch on one TP rank
(n = s/cp * b tokens, e = bytes per element of params_dtype, t = tp, t_sp = t with sequence
parallelism else 1, q = heads*head_dim, kv = groups*head_dim, f = ffn_hidden_size)::

    norms        2 * n*h * (4 + 2e) / t_sp   each RMSNorm keeps x.float() (4 B), x*rsqrt (e) and
                                             the linear's input x*rsqrt*w (e); in fp32 x.float() is
                                             the layer input itself
    attention    n * e * (3q + 3kv) / t      fused QKV output (held whole by the value view), q and
                                             k after RoPE, core output (the proj's input)
    mlp          5 * n * e * f / t           fc1 output (2f), silu(gate), up + 0 offset, silu*up
    small        8n/t_sp + 4*b*s*heads/t + 4*s*head_dim*e
                                             rsqrt rows, SDPA logsumexp, RoPE cos/sin of q and k
    cp > 1       + 4 * n * q / t             the ring attention's merged output, kept in fp32 for its
                                             backward beside the e-byte copy the projection takes

SDPA (flash kernels on GPU, its flash kernel on CPU) saves q, k, v, its output and the
logsumexp: never an s x s score matrix. Selective recompute (megatron-core's "core_attn") thus
only drops the logsumexp (and, under CP, the fp32 merged output: the checkpointed core attention
keeps only its inputs); full recompute keeps just each layer's input (n*h*e/t_sp) and rebuilds
one layer at a time in backward.

One micro-batch through one model chunk (planned_chunk_activations) stores its layers' bytes, the
pipeline messages (the chunk's output unless it is the model's last; its received input unless it is
the model's first, in bf16 without full recompute), and on the model's last chunk the final norm
(as a layer norm) and the cross-entropy's fp32 softmax, 4 * n * V/t (full sequence per TP rank, even
with SP). The bf16 logits die with the forward and their gradient is made in the backward: both are
counted as the output layer's backward moment, not as stored.

Backward: on top of what is stored, the gradient flowing back along the residual stream (n*h*e/t_sp)
and the largest of these moments of the chunk's last layer (layer_backward_moments):

    fc2          n*f*e/t + f*h*e/t (+ n*h*e with SP)
                                             input gradient, weight-gradient temporary and, under
                                             SP, the output gradient all-gathered whole
    SwiGLU       2 * n*f*e/t                 its incoming gradient and the gate's and up's (fc2's
                                             saved input gone): the larger where n > h
    fc1          2*n*f*e/t + 2*f*h*e/t + n*h*e/t_sp (+ n*h*e with SP) - 5*n*f*e/t
                                             its output gradient, [2f/t, h] weight-gradient temporary,
                                             input gradient and (SP) input gathered again, the MLP's
                                             saved tensors freed: the larger where n < h/4 (cp=4)
    norm         n*h*(16 + e')/t_sp - 5*n*f*e/t
                                             pre-MLP RMSNorm: fp32 temporaries of 16 B/element (e' = e
                                             in bf16, 0 in fp32) after the MLP's saved tensors are freed;
                                             decides without SP at large TP
    cp ring      (below)

plus, under full recompute, the layer being rebuilt. On the last stage the layers' backward runs after
the output layer's and the final norm's, whose logits and saved tensors are freed by then; the output
layer's own moment holds the softmax, the logits' gradient ((e or 4) * n*V/t), the [V/t, h] weight-gradient
temporary and the [s, b, h] input gradient ((4 + e') * n*V/t at least). On the first stage the embedding's
dense [V/t, h] gradient comes after the chunk's layers are freed, beside the chunk's output message, the
gradient leaving the first layer (n*h*e/t_sp) and the one reaching the embedding whole (n*h*e). A rank at its peak holds the in-flight
micro-batches' stored bytes (inflight_chunks; the others counted as a chunk between the model's ends) and
the backward of one of them. Not per micro-batch (counted in `transient`, from the first forward on):
megatron-core's global memory buffer, the SP all-gather's [s/cp, b, h] input (n*h*e under SP), and the
RoPE table its lru_cache keeps (4 * s/cp * head_dim).

Where these come from: the terms were found with the fake-tensor measure (rehearsal/activations.py: one
micro-batch of one chunk of any rank of any layout, PyTorch's MemTracker over fake tensors), which
tests/unit/test_rehearsal_activations.py holds byte for byte to real CPU runs and the planner to within
a few per cent of (tiny, gpt_125m, llama_70b, sota_175b; tp 1-8, SP on/off, each recompute mode, cp 1
and 4, first/middle/last stage). The totals match measured peaks of whole training steps
(tests/integration/test_planner_memory.py, with cp=2 runs); the TP/SP/PP/VPP terms were checked once by
hand against 2-rank gloo runs (every rank within 0.3%), which the test suite does not repeat.

Context parallelism splits each sequence over cp ranks (n = s/cp * b above), so every activation
term falls as 1/cp. Its ring attention saves its local q, k, v, the fp32 merged output and the
logsumexp (backward passes K and V around the ring again instead of keeping the other ranks'
blocks) and holds exchange buffers while a layer's attention runs backward (kv_block =
2 * n * kv * e / t, one rank's K and V)::

    cp ring      2 * kv_block                the K,V block in use and the one arriving
                 + 2 * kv_block * 4/e        dK,dV partial sums (fp32) in use and arriving
                 + n * q * 4 / t             dQ accumulated in fp32 over the ring's steps
                 + n * (q + 2kv) * e / t     dQ, dK, dV of this rank's tokens, the attention's result

Data-parallel sharding (P parameters on the rank after the TP/PP split, N = dp*cp ranks, e bytes
per parameter; fp32 grads as grad_reduce_in_fp32=True, Adam's 8 bytes and a 4-byte fp32 master)::

    none (DDP)             P*e + P*4 + P*(8 + master)      master: 4 for bf16, 0 for fp32 params
      + distributed opt.   B*e + B*4 + S*(8 + master)      megatron-core's ZeRO-1
    fsdp=optim             P*e + P*4 + P/N*(8 + 4)         Megatron-FSDP keeps an fp32 main copy
    fsdp=optim_grads       P*e + P/N*4 + P/N*(8 + 4)       even of fp32 params (preserve_fp32_weights)
    fsdp=optim_grads_params  P/N*e + P/N*4 + P/N*(8 + 4)

The DDP rows are exact, element for element (planning/buffers.py): B is the rank's padded buffer
(each parameter starts at a multiple of 64 elements, each bucket ends at a multiple of lcm(N, 128);
the bf16 weights live in a param buffer of B elements), S the parameter elements of the data-parallel
rank's slices of it, taken on the data-parallel rank with the most (padding falls on the last ranks).
The FSDP rows divide P evenly and leave Megatron-FSDP's own padding out.

Megatron-FSDP (megatron-core 0.16.1, distributed/fsdp/src/megatron_fsdp/param_and_grad_buffer.py,
ParamAndGradBuffer._init_each_parameter_group_buffers) shards each buffer over the dp*cp group, and
only over a group of more than one rank: at N = 1 every strategy holds what DDP does. On top, for
the backward (`model_state_bytes`, the fields gathered_*), what it allocates whole for a while:

- optim_grads has no FSDP units (mcore_fsdp_adapter.py: units only for optim_grads_params) and,
  with ddp_config.bucket_size unset (parallelize/ddp.py), one gradient bucket per model chunk: the
  chunk's fp32 gradients exist whole until its backward ends and they are reduce-scattered. Its
  saving shows outside the backward only.
- optim_grads_params gathers per FSDP unit, one TransformerLayer. Before a unit computes (forward,
  and again in backward) it all-gathers it and prefetches the next units until the prefetch reaches
  half of suggested_communication_unit_size (megatron_fsdp.py: max(1e9, 2 x a unit's elements) when
  unset, i.e. at least 5e8 elements): 1 + ceil(max(5e8, u) / u) units of u elements, at most the
  chunk's layers (2 for layers above 5e8 elements, 4 for sota_175b's 211M at tp=8, every layer of a
  small model). Its fp32 gradients wait for their reduce-scatter in a queue that holds up to that
  unit size: 1 + floor(max(1e9, 2u) / u) units' gradients. Parameters outside the units (embedding,
  output layer, final norm) are gathered when used and counted whole, weights and gradients.
  These windows follow megatron-core's defaults and are not measured here; fsdp_double_buffer caps
  the units at two.

Not counted (the planner's memory_fraction leaves room for them): the CUDA context and NCCL
buffers, the caching allocator's fragmentation, Megatron-FSDP's padding, the batch's token/label
tensors. Transformer Engine's fused layers save less than this local spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_sota.config.job import JobConfig
from megatron_sota.config.model import ModelConfig
from megatron_sota.model.param_count import layer_params
from megatron_sota.planning.buffers import ADAM_BYTES, GRAD_BYTES, MASTER_BYTES, fullest_rank_buffers, rank_parameter_shapes
from megatron_sota.planning.layout import ParallelLayout

FSDP_COMM_UNIT_FLOOR = 1_000_000_000
"""Elements: Megatron-FSDP's smallest suggested_communication_unit_size when ddp_config leaves it
unset (megatron_fsdp.py), the reduce-scatter queue's capacity; it prefetches half of it."""

OPTIMIZER_KERNELS = ("fused", "foreach", "per_tensor")
"""Which Adam runs, which decides its temporaries: TE/apex FusedAdam (the NGC image) makes none;
torch.optim.AdamW (megatron-core's fallback without TE/apex) runs `foreach` on CUDA, one fp32
temporary the size of all the parameters it steps, and `per_tensor` on CPU, two temporaries of
the largest one."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on one GPU at its peak moment; the fields add up to `total`."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    """Saved for backward, summed over the micro-batches in flight at the peak."""
    logits: int
    """Logits and cross-entropy buffers held at the peak (last pipeline stage only)."""
    transient: int
    """Buffers on top at the peak: weight-gradient and activation-gradient temporaries, the layer
    being recomputed, or the optimizer step's temporaries; and, in every phase, the persistent
    forward buffers (persistent_buffer_bytes: the SP all-gather buffer and the RoPE table)."""
    pipeline_rank: int
    phase: str
    """When the peak happens: 'output-layer backward', 'layer backward' or 'optimizer step'."""

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.static + self.activations + self.logits + self.transient

    def breakdown_gib(self) -> dict:
        gib = 2**30
        return {
            "weights": self.weights / gib,
            "gradients": self.gradients / gib,
            "optimizer": self.optimizer / gib,
            "activations": self.activations / gib,
            "logits": self.logits / gib,
            "transient": self.transient / gib,
            "total": self.total / gib,
        }


@dataclass(frozen=True)
class _Shape:
    """The tensor sizes of one micro-batch on one TP rank."""

    tokens: int
    """s/cp * b: tokens of a micro-batch on this rank's slice of the sequence."""
    e: int
    t: int
    t_sp: int

    def hidden(self, model: ModelConfig) -> int:
        """Bytes of one [s, b, h] activation as this rank holds it (split over TP with SP)."""
        return self.tokens * model.hidden_size * self.e // self.t_sp


def layer_activation_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """Bytes one layer saves for backward for one micro-batch without recompute (module docstring)."""
    shape = _shape(layout)
    n, e, t, t_sp = shape.tokens, shape.e, shape.t, shape.t_sp
    h, f, d = model.hidden_size, model.ffn_hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.num_query_groups * d
    norms = 2 * n * h * (4 + 2 * e) // t_sp
    attention = n * e * (3 * q + 3 * kv) // t
    mlp = 5 * n * e * f // t
    seq = layout.seq_length // layout.cp
    small = 2 * 4 * n // t_sp + 4 * n * model.num_attention_heads // t + 4 * seq * d * e
    return norms + attention + mlp + small + _cp_merged_output_bytes(model, layout)


def _cp_merged_output_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """Context parallelism: the ring attention keeps its merged output in fp32 for its backward (module docstring)."""
    if layout.cp == 1:
        return 0
    shape = _shape(layout)
    return 4 * shape.tokens * model.num_attention_heads * model.head_dim // shape.t


def cp_attention_backward_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """Buffers a context-parallel ring attention holds in one layer's backward (module docstring); 0 at cp=1."""
    if layout.cp == 1:
        return 0
    shape = _shape(layout)
    n, e, t = shape.tokens, shape.e, shape.t
    q, kv = model.num_attention_heads * model.head_dim, model.num_query_groups * model.head_dim
    kv_block = 2 * n * kv * e // t
    ring = 2 * kv_block + 2 * (2 * n * kv * 4 // t) + n * q * 4 // t
    return ring + n * (q + 2 * kv) * e // t


def _core_attention_saved_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """What the core attention saves beyond its inputs (q, k, v) and the output the projection keeps: the
    logsumexp and, under context parallelism, the fp32 merged output; selective recompute drops both."""
    shape = _shape(layout)
    return 4 * shape.tokens * model.num_attention_heads // shape.t + _cp_merged_output_bytes(model, layout)


def _shape(layout: ParallelLayout) -> _Shape:
    return _Shape(
        tokens=layout.seq_length // layout.cp * layout.micro_batch_size,
        e=layout.bytes_per_element,
        t=layout.tp,
        t_sp=layout.tp if layout.sp else 1,
    )


def stored_layer_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """What one layer keeps between its forward and its backward, by recompute mode."""
    if layout.recompute == "full":
        return _shape(layout).hidden(model)  # the checkpoint keeps the layer input only
    full = layer_activation_bytes(model, layout)
    return full - _core_attention_saved_bytes(model, layout) if layout.recompute == "selective" else full


def inflight_chunks(layout: ParallelLayout, rank: int) -> int:
    """Model-chunk forwards whose activations a pipeline rank holds at once (megatron-core schedules).

    1F1B: rank r runs pp-r-1 warm-up forwards, then one more before its first backward. Interleaved:
    2(pp-r-1) + (vpp-1)*pp warm-up chunk forwards (microbatch_group_size_per_vp_stage = pp), plus one;
    for rank 0 that is pp*vpp + pp - 1 chunks, i.e. the factor 1 + (pp-1)/(pp*vpp) of Korthikanti
    et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec. 4.2.3).
    """
    if layout.pp == 1:
        return 1  # forward_backward_no_pipelining: one micro-batch at a time
    total = layout.num_microbatches * layout.vpp
    if layout.vpp == 1:
        return min(total, layout.pp - rank)
    warmup = 2 * (layout.pp - rank - 1) + (layout.vpp - 1) * layout.pp
    return total if warmup >= total else warmup + 1


def params_on_rank(model: ModelConfig, padded_vocab: int, layout: ParallelLayout, rank: int) -> tuple[int, int]:
    """(parameters on this rank, largest single parameter tensor on it), TP split applied.

    Norm weights are replicated over TP; every matrix (embedding and output rows included) is split.
    A layout that does not divide the model is estimated with its shapes rounded down (search.py rejects it).
    """
    params = [numel for chunk in rank_parameter_shapes(model, padded_vocab, layout, rank, strict=False) for numel, _ in chunk]
    return sum(params), max(params, default=0)


@dataclass(frozen=True)
class ModelState:
    """Parameter, gradient and optimizer bytes on one GPU under the layout's data-parallel sharding."""

    weights: int
    gradients: int
    optimizer: int
    """Held through the whole step: sharded over dp*cp as the strategy says (module docstring)."""
    gathered_weights: int
    """fsdp=optim_grads_params: weights all-gathered whole for the FSDP units in flight."""
    gathered_gradients: int
    """fsdp=optim_grads(_params): fp32 gradients held whole until their reduce-scatter."""

    @property
    def held(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def backward_peak(self) -> int:
        return self.held + self.gathered_weights + self.gathered_gradients


def fsdp_unit_elements(model: ModelConfig, layout: ParallelLayout) -> int:
    """Elements of one FSDP unit (a TransformerLayer) on a TP rank: matrices split, norms replicated."""
    h = model.hidden_size
    return (layer_params(model) - 2 * h) // layout.tp + 2 * h


def _fsdp_gathered_elements(model: ModelConfig, layout: ParallelLayout, params: int) -> tuple[int, int]:
    """(weights, gradients) elements Megatron-FSDP holds whole during a backward (module docstring)."""
    layers = model.num_layers // layout.pp
    per_chunk = layers // layout.vpp  # each model chunk is its own FSDP instance
    unit = fsdp_unit_elements(model, layout)
    outside = params - layers * unit  # embedding, output layer, final norm: not units
    if layout.fsdp == "optim_grads":
        return 0, per_chunk * unit + outside
    comm_unit = max(FSDP_COMM_UNIT_FLOOR, 2 * unit)
    gathered = min(per_chunk, 1 + -(-(comm_unit // 2) // unit))
    queued = min(per_chunk, 1 + comm_unit // unit)
    return gathered * unit + outside, queued * unit + outside


def model_state_bytes(model: ModelConfig, padded_vocab: int, layout: ParallelLayout, rank: int = 0) -> ModelState:
    """Weights, gradients and optimizer states of pipeline rank `rank` by sharding strategy (module docstring)."""
    if layout.fsdp == "none":
        # Exactly what megatron-core's DDP and optimizer allocate, on the data-parallel rank holding the most.
        exact = fullest_rank_buffers(model, padded_vocab, layout, rank, strict=False)
        return ModelState(exact.weights, exact.gradients, exact.optimizer, 0, 0)
    e = layout.bytes_per_element
    params = params_on_rank(model, padded_vocab, layout, rank)[0]
    shards = layout.dp * layout.cp
    sharded = -(-params // shards)
    weights = (sharded if layout.fsdp == "optim_grads_params" else params) * e
    gradients = (params if layout.fsdp == "optim" else sharded) * GRAD_BYTES
    optimizer = sharded * (ADAM_BYTES + MASTER_BYTES)  # preserve_fp32_weights: fp32 main even of fp32 params
    if layout.fsdp == "optim" or shards == 1:
        return ModelState(weights, gradients, optimizer, 0, 0)  # nothing distributed to gather
    gathered_weights, gathered_grads = _fsdp_gathered_elements(model, layout, params)
    return ModelState(weights, gradients, optimizer, gathered_weights * e, gathered_grads * GRAD_BYTES)


def _optimizer_temporaries(kernel: str, optimizer_params: int, largest: int) -> int:
    if kernel == "fused":
        return 0
    if kernel == "foreach":
        return 4 * optimizer_params  # torch._foreach_sqrt(exp_avg_sqs): one fp32 copy of them all
    if kernel == "per_tensor":
        return 2 * 4 * min(largest, optimizer_params)  # exp_avg_sq.sqrt() and its division, one tensor at a time
    raise ValueError(f"optimizer kernel must be one of {', '.join(OPTIMIZER_KERNELS)}, got {kernel!r}")


@dataclass(frozen=True)
class BackwardMoment:
    """One candidate peak moment of a chunk's backward, one micro-batch: what it holds of its own stored bytes
    (activations, logits) and what it adds on top."""

    phase: str
    activations: int
    logits: int
    extra: int

    @property
    def total(self) -> int:
        return self.activations + self.logits + self.extra


@dataclass(frozen=True)
class PlannedActivations:
    """One micro-batch through one model chunk of one pipeline rank, as the planner counts it."""

    stored_bytes: int
    """What the chunk's forward leaves for its backward (the cross-entropy's fp32 softmax included)."""
    logits_bytes: int
    """Of `stored_bytes`, the fp32 softmax of the logits (the last chunk of the last stage only)."""
    peak: BackwardMoment
    """The chunk's backward at its highest moment."""

    @property
    def backward_peak_bytes(self) -> int:
        """The most its backward adds on top of `stored_bytes` (negative where freed activations make room)."""
        return self.peak.total - self.stored_bytes

    @property
    def peak_bytes(self) -> int:
        return self.stored_bytes + max(0, self.backward_peak_bytes)

    @property
    def phase(self) -> str:
        return self.peak.phase


def _fc2_moment(model: ModelConfig, layout: ParallelLayout) -> int:
    """fc2's backward: its input gradient and weight-gradient temporary and, with sequence parallelism, its output
    gradient all-gathered whole ([s, b, h], a new tensor beside the residual stream's split one)."""
    shape = _shape(layout)
    n, e, t = shape.tokens, shape.e, shape.t
    h, f = model.hidden_size, model.ffn_hidden_size
    gathered = n * h * e if layout.sp and t > 1 else 0
    return n * f * e // t + f * h * e // t + gathered


def layer_backward_moments(model: ModelConfig, layout: ParallelLayout) -> dict:
    """What the last layer of a chunk holds on top of the stored activations, besides the gradient flowing back
    along the residual stream, at each candidate moment of its backward (module docstring, "Backward")."""
    shape = _shape(layout)
    n, e, t, t_sp = shape.tokens, shape.e, shape.t, shape.t_sp
    h, f = model.hidden_size, model.ffn_hidden_size
    norm_temporaries = n * h * (16 + (e if e != 4 else 0)) // t_sp
    gathered = n * h * e if layout.sp and t > 1 else 0  # the SP all-gather of a whole [s/cp, b, h] tensor
    return {
        "fc2 backward": _fc2_moment(model, layout),
        "SwiGLU backward": 2 * n * f * e // t,
        # fc1 after SwiGLU's (the MLP's saved 5*n*f*e/t gone): its output gradient, its input gathered again under
        # SP, its input gradient as the layer keeps it and its [2f/t, h] weight-gradient temporary.
        "fc1 backward": 2 * n * f * e // t + gathered + n * h * e // t_sp + 2 * f * h * e // t - 5 * n * f * e // t,
        "norm backward": norm_temporaries - 5 * n * f * e // t,
        "CP attention backward": cp_attention_backward_bytes(model, layout),
    }


def _final_norm_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    shape = _shape(layout)
    return shape.tokens * model.hidden_size * (4 + 2 * shape.e) // shape.t_sp  # as each layer's norms


def planned_chunk_activations(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, pipeline_rank: int, vp_stage: int
) -> PlannedActivations:
    """One micro-batch through chunk `vp_stage` of pipeline rank `pipeline_rank`: its stored bytes and its
    backward's candidate moments (module docstring), the highest of them as `peak`."""
    shape = _shape(layout)
    n, e, t = shape.tokens, shape.e, shape.t
    h = model.hidden_size
    hidden = shape.hidden(model)
    first = pipeline_rank == 0 and vp_stage == 0
    last = pipeline_rank == layout.pp - 1 and vp_stage == layout.vpp - 1

    stored = model.num_layers // (layout.pp * layout.vpp) * stored_layer_bytes(model, layout)
    if layout.pp > 1:
        # The schedule keeps each chunk's output (deallocate_pipeline_outputs=False) and its received
        # input; in fp32, or under full recompute, that input is already the first layer's saved input.
        if not last:
            stored += hidden
        if not first and e != 4 and layout.recompute != "full":
            stored += hidden
    logits = n * padded_vocab // t  # full sequence per TP rank, even with SP
    cast = e if e != 4 else 0  # bf16 logits (a forward transient) and their gradient (a backward one)
    softmax = 4 * logits if last else 0  # the cross-entropy keeps its fp32 softmax
    final_norm = _final_norm_bytes(model, layout) if last else 0
    stored += final_norm + softmax

    moment, on_top = max(layer_backward_moments(model, layout).items(), key=lambda m: m[1])
    layer_backward = hidden + on_top  # with the gradient flowing back along the residual stream
    if layout.recompute == "full":
        recomputed = layer_activation_bytes(model, layout)
        if e == 4:
            recomputed -= hidden  # its x.float() is the kept input itself
        layer_backward += recomputed
    # On the last stage the layers' backward comes after the output layer's and the final norm's: their
    # logits and saved tensors are gone by then.
    moments = [BackwardMoment(f"layer backward ({moment})", stored - softmax - final_norm, 0, layer_backward)]
    if first:
        # The dense [V/t, h] embedding gradient comes once the chunk's layers are all freed, beside the chunk's
        # output (kept until its backward ends), the gradient leaving the first layer (n*h*e/t_sp) and the one
        # reaching the embedding whole ([s/cp, b, h]: gathered under SP; with TP, copied with the other ranks'
        # vocabulary rows masked). Measured at tp 1 and 4, with and without SP, bf16 and fp32.
        output = hidden if layout.pp > 1 and not last else 0
        moments.append(BackwardMoment("embedding backward", output, 0, padded_vocab * h * e // t + hidden + n * h * e))
    if last:
        # Output-layer backward: the logits' gradient (cast down, or the fp32 softmax reused in place), the
        # [V/t, h] weight-gradient temporary and the [s, b, h] input gradient, beside the fp32 softmax.
        backward = (cast or 4) * logits + padded_vocab * h * e // t + n * h * e
        extra = max((4 + cast) * logits, backward) - softmax
        moments.append(BackwardMoment("output-layer backward", stored - softmax, softmax, extra))
    return PlannedActivations(stored, softmax, max(moments, key=lambda m: m.total))


def persistent_buffer_bytes(model: ModelConfig, layout: ParallelLayout) -> int:
    """Kept from a rank's first forward on, whatever the micro-batches in flight (module docstring): megatron-core's
    global memory buffer (the sequence-parallel all-gather's [s/cp, b, h] input) and the RoPE table."""
    shape = _shape(layout)
    gather = shape.tokens * model.hidden_size * shape.e if layout.sp and layout.tp > 1 else 0
    rope = 4 * layout.seq_length // layout.cp * model.head_dim
    return gather + rope


def layout_of(job: JobConfig, world_size: int) -> ParallelLayout:
    """The planner's layout for a training job at a world size (dp from what tp, pp and cp leave)."""
    p, t = job.parallel, job.train
    dp = world_size // (p.tp * p.pp * p.cp)
    return ParallelLayout(
        tp=p.tp,
        pp=p.pp,
        vpp=p.vpp if p.vpp and p.vpp > 1 else 1,
        cp=p.cp,
        dp=dp,
        micro_batch_size=t.micro_batch_size,
        num_microbatches=max(1, t.global_batch_size // (t.micro_batch_size * dp)),
        seq_length=t.seq_length,
        sp=bool(p.sp),
        recompute=t.recompute,
        distributed_optimizer=p.distributed_optimizer,
        fsdp=p.fsdp,
        dtype=job.precision.dtype,
    )


def estimate_rank_memory(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, rank: int, optimizer_kernel: str = "fused"
) -> MemoryEstimate:
    """Pipeline rank `rank` at its peak: the in-flight micro-batches' stored activations and the backward of the
    last of them (planned_chunk_activations), or the optimizer step."""
    params, largest = params_on_rank(model, padded_vocab, layout, rank)
    state = model_state_bytes(model, padded_vocab, layout, rank)
    if layout.fsdp == "none":
        optimizer_params = fullest_rank_buffers(model, padded_vocab, layout, rank, strict=False).optimizer_elements
    else:
        optimizer_params = -(-params // (layout.dp * layout.cp))
    gathered = state.gathered_weights + state.gathered_gradients  # FSDP, during the backward
    persistent = persistent_buffer_bytes(model, layout)

    # Every chunk of the rank may run the backward at the peak; the other in-flight micro-batches are counted as a
    # chunk between the model's ends (with virtual stages; without, the rank's one chunk), with both pipeline
    # messages: one [s, b, h] too many for each of rank 0's first chunks in flight.
    chunks = [planned_chunk_activations(model, padded_vocab, layout, rank, vp) for vp in range(layout.vpp)]
    middle = [c for vp, c in enumerate(chunks) if not (rank == 0 and vp == 0 or rank == layout.pp - 1 and vp == layout.vpp - 1)]
    others = (inflight_chunks(layout, rank) - 1) * (middle[0] if middle else chunks[0]).stored_bytes
    candidates = [
        (c.peak.phase, others + c.peak.activations, c.peak.logits, c.peak.extra + gathered + persistent) for c in chunks
    ]
    step_temporaries = _optimizer_temporaries(optimizer_kernel, optimizer_params, largest)
    candidates.append(("optimizer step", 0, 0, step_temporaries + persistent))
    phase, held_activations, held_logits, extra = max(candidates, key=lambda c: c[1] + c[2] + c[3])
    return MemoryEstimate(state.weights, state.gradients, state.optimizer, held_activations, held_logits, extra, rank, phase)


def estimate_memory(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, optimizer_kernel: str = "fused"
) -> MemoryEstimate:
    """The pipeline rank with the highest peak: the first holds the most micro-batches (and the
    embedding), the last the logits; ranks in between hold less than the first, so only the two
    ends and their neighbours are evaluated."""
    ranks = sorted({0, 1, layout.pp - 2, layout.pp - 1} & set(range(layout.pp)))
    estimates = [estimate_rank_memory(model, padded_vocab, layout, r, optimizer_kernel) for r in ranks]
    return max(estimates, key=lambda m: m.total)
