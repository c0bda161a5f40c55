"""The planner's activation figure for one micro-batch through one model chunk, beside the fake-tensor measure.

rehearsal/activations.py measures what one micro-batch's forward keeps for backward on one chunk of one rank and the
most its backward holds on top. This module states the same two quantities from planning/memory.py's terms, as
estimate_rank_memory composes them for a chunk (its layers' stored bytes, the pipeline messages, the final norm and
logits on the last stage) and its backward candidates (a layer's backward, the embedding's and the output layer's),
here for a single micro-batch and a single chunk. The planner's in-flight activations are this chunk figure times
inflight_chunks; the issue holds the two within 10% of each other.

Per chunk rather than per rank: the chunk that holds the output layer keeps no output message, the one that holds the
embedding no received input (estimate_rank_memory counts every chunk of a rank alike, a difference of one [s, b, h]
tensor per chunk on the first and last ranks with virtual stages).

Where the measure showed estimate_rank_memory wrong (`corrected=True`, the default; memory.py is left as it is):
- a layer's backward peaks at the largest of three moments (layer_backward_moments), not always at fc2's; under
  sequence parallelism fc2's own moment holds its output gradient all-gathered whole besides;
- on the last stage the layers' backward runs after the final norm's, whose saved tensors are gone by then;
- of the (4 + e) * logits held at the output layer, only the fp32 softmax (4) is stored by the forward: the bf16
  logits are a forward transient and their gradient a backward one (the same total, split as the run allocates it).
What neither counts: megatron-core's global memory buffer (the sequence-parallel all-gather's [s, b, h] input,
allocated once per rank and kept) and the RoPE table its lru_cache keeps: ActivationMeasure.persistent_bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_sota.config.job import JobConfig
from megatron_sota.config.model import ModelConfig
from megatron_sota.planning.layout import ParallelLayout
from megatron_sota.planning.memory import (
    cp_attention_backward_bytes,
    layer_activation_bytes,
    stored_layer_bytes,
)

TOLERANCE = 0.10
"""The issue's bound on the planner's activation term against the fake-tensor peak."""


@dataclass(frozen=True)
class PlannedActivations:
    stored_bytes: int
    """What the chunk's forward leaves for its backward, one micro-batch."""
    backward_peak_bytes: int
    """The most its backward adds on top of that (negative where a freed chunk makes room for the embedding's)."""
    phase: str

    @property
    def peak_bytes(self) -> int:
        return self.stored_bytes + max(0, self.backward_peak_bytes)


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


def planned_chunk_activations(
    model: ModelConfig,
    padded_vocab: int,
    layout: ParallelLayout,
    pipeline_rank: int,
    vp_stage: int,
    corrected: bool = True,
) -> PlannedActivations:
    """planning/memory.py's figure for one micro-batch through chunk `vp_stage` of pipeline rank `pipeline_rank`.

    `corrected=False`: a layer's backward as estimate_rank_memory has it (the fc2 moment only); True: the larger of
    the moments layer_backward_moments lists, which the fake-tensor measure found."""
    e, t = layout.bytes_per_element, layout.tp
    t_sp = t if layout.sp else 1
    n = layout.seq_length // layout.cp * layout.micro_batch_size
    h, f = model.hidden_size, model.ffn_hidden_size
    hidden = n * h * e // t_sp
    first = pipeline_rank == 0 and vp_stage == 0
    last = pipeline_rank == layout.pp - 1 and vp_stage == layout.vpp - 1

    stored = model.num_layers // (layout.pp * layout.vpp) * stored_layer_bytes(model, layout)
    if layout.pp > 1:
        if not last:
            stored += hidden  # the chunk's output, kept by the schedule
        if not first and e != 4 and layout.recompute != "full":
            stored += hidden  # the received input (else the first layer's saved input)
    held_logits = 0
    if last:
        stored += n * h * (4 + 2 * e) // t_sp  # the final norm
        logits = n * padded_vocab // t
        cast = e if e != 4 else 0
        # The cross-entropy keeps its fp32 softmax; the bf16 logits die with the forward (a forward transient),
        # and their bf16 gradient is made in the backward: estimate_rank_memory's (4 + cast) * logits held at
        # the output layer's backward, split as the run allocates it.
        held_logits = 4 * logits
        stored += held_logits

    moments = layer_backward_moments(model, layout) if corrected else {"fc2 backward": _fc2_moment(model, layout, False)}
    moment, layer_backward = max(moments.items(), key=lambda m: m[1])
    layer_backward = hidden + max(layer_backward, cp_attention_backward_bytes(model, layout))
    if layout.recompute == "full":
        recomputed = layer_activation_bytes(model, layout)
        if e == 4:
            recomputed -= hidden
        layer_backward += recomputed
    # On the last stage the layers' backward comes after the output layer's and the final norm's, whose logits
    # and saved tensors are gone by then (estimate_rank_memory still counts the final norm's: `corrected`).
    final_norm = n * h * (4 + 2 * e) // t_sp if last and corrected else 0
    candidates = [(f"layer backward ({moment})", layer_backward - held_logits - final_norm)]
    if first:
        candidates.append(("embedding backward", padded_vocab * h * e // t - (stored - held_logits)))
    if last:
        backward = (cast or 4) * logits + padded_vocab * h * e // t + n * h * e
        # estimate_rank_memory: (4 + cast) * logits held and max(0, backward - that) on top, in all
        # max((4 + cast) * logits, backward) beyond the layers' activations; 4 * logits of it is stored here.
        candidates.append(("output-layer backward", max((4 + cast) * logits, backward) - held_logits))
    phase, extra = max(candidates, key=lambda c: c[1])
    return PlannedActivations(stored, extra, phase)


def _fc2_moment(model: ModelConfig, layout: ParallelLayout, corrected: bool) -> int:
    """fc2's backward: its input gradient and weight-gradient temporary; with sequence parallelism (corrected) also
    its output gradient all-gathered whole ([s, b, h], a new tensor beside the residual stream's split one)."""
    e, t = layout.bytes_per_element, layout.tp
    n = layout.seq_length // layout.cp * layout.micro_batch_size
    h, f = model.hidden_size, model.ffn_hidden_size
    gathered = n * h * e if corrected and layout.sp and t > 1 else 0
    return n * f * e // t + f * h * e // t + gathered


def layer_backward_moments(model: ModelConfig, layout: ParallelLayout) -> dict:
    """What the last layer of a chunk holds on top of the stored activations, besides the gradient flowing back
    along the residual stream, at each candidate moment of its backward (the local spec, eager kernels).

    Found with the fake-tensor measure (rehearsal/activations.py, which tests/unit/test_rehearsal_activations.py
    holds to real CPU runs); estimate_rank_memory has only the first, without its gather:

    - fc2 backward: its input gradient n*f*e/t, its weight-gradient temporary f*h*e/t and, with sequence
      parallelism, its output gradient all-gathered whole, n*h*e.
    - SwiGLU backward (after fc2's, whose saved input is gone): its incoming gradient n*f*e/t and the gate's and
      up's gradients on top, 2*n*f*e/t in all: the larger moment where n > h.
    - the pre-MLP RMSNorm's backward (after the MLP's, whose saved 5*n*f*e/t and the norm's output n*h*e/t_sp are
      gone): the norm-output gradient n*h*e/t_sp and fp32 temporaries of 16 bytes per element (18 - e net in bf16,
      with the x.float() cast's gradient) on top of the saved input: without sequence parallelism at large TP the
      norm's full [s, b, h] fp32 temporaries exceed the MLP's split ones.
    """
    e, t = layout.bytes_per_element, layout.tp
    t_sp = t if layout.sp else 1
    n = layout.seq_length // layout.cp * layout.micro_batch_size
    h, f = model.hidden_size, model.ffn_hidden_size
    norm_temporaries = n * h * (16 + (e if e != 4 else 0)) // t_sp
    return {
        "fc2 backward": _fc2_moment(model, layout, True),
        "SwiGLU backward": 2 * n * f * e // t,
        "norm backward": norm_temporaries - 5 * n * f * e // t,
    }
