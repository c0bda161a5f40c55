"""Holds the planner to the rehearsal: its memory terms for a layout beside what the real code builds at that layout.

`tools/plan.py --verify` runs this for its top layouts. The static terms (weights, main gradients, optimizer master
copies and moments) must be equal to the byte; the activation term must be within ACTIVATION_TOLERANCE of the
fake-tensor measurement (activations.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from megatron_sota.config.compose import compose_job
from megatron_sota.config.job import JobConfig
from megatron_sota.planning.layout import ParallelLayout
from megatron_sota.planning.search import PlanRequest
from megatron_sota.rehearsal.rank import global_rank
from megatron_sota.rehearsal.run import Rehearsal, RehearsalOptions, rehearse

ACTIVATION_TOLERANCE = 0.10
GIB = 2**30


def layout_job(request: PlanRequest, layout: ParallelLayout) -> JobConfig:
    """The training job the planner's layout stands for: the preset, the layout's parallel and batch settings."""
    overrides = [
        f"model={request.model.name}",
        f"parallel.tp={layout.tp}", f"parallel.pp={layout.pp}", f"parallel.cp={layout.cp}",
        f"parallel.vpp={layout.vpp if layout.vpp > 1 else 'null'}", f"parallel.sp={str(layout.sp).lower()}",
        f"parallel.distributed_optimizer={str(layout.distributed_optimizer).lower()}", f"parallel.fsdp={layout.fsdp}",
        f"train.micro_batch_size={layout.micro_batch_size}", f"train.global_batch_size={layout.global_batch_size}",
        f"train.seq_length={layout.seq_length}", f"train.recompute={layout.recompute}", f"precision.dtype={layout.dtype}",
    ]
    if layout.seq_length > request.model.max_position_embeddings:
        overrides.append(f"model.max_position_embeddings={layout.seq_length}")
    return compose_job(overrides)


@dataclass(frozen=True)
class TermCheck:
    term: str
    planner: int
    rehearsal: int
    tolerance: float
    """0: must be equal."""

    @property
    def ok(self) -> bool:
        if self.tolerance == 0:
            return self.planner == self.rehearsal
        return abs(self.planner - self.rehearsal) <= self.tolerance * self.rehearsal


@dataclass(frozen=True)
class LayoutCheck:
    layout: ParallelLayout
    pipeline_rank: int
    global_rank: int
    terms: List[TermCheck]
    rehearsal: Rehearsal

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.terms)


def _planner_rank(request: PlanRequest, layout: ParallelLayout, pipeline_rank: Optional[int]) -> Tuple[int, int]:
    """(pipeline rank, rank in the dp*cp group) whose memory the planner reports: its peak pipeline rank (or the one
    given) and the data-parallel rank holding the most optimizer state there."""
    from megatron_sota.planning.buffers import fullest_rank_buffers
    from megatron_sota.planning.memory import estimate_memory

    padded = request.padded_vocab(layout.tp)
    if pipeline_rank is None:
        pipeline_rank = estimate_memory(request.model, padded, layout, request.optimizer_kernel).pipeline_rank
    return pipeline_rank, fullest_rank_buffers(request.model, padded, layout, pipeline_rank).dp_rank


def static_terms(request: PlanRequest, layout: ParallelLayout, pipeline_rank: int, rehearsal: Rehearsal) -> List[TermCheck]:
    """The planner's weights, gradients and optimizer bytes of that rank (what its table prints) beside the build's."""
    from megatron_sota.planning.memory import estimate_rank_memory

    estimate = estimate_rank_memory(
        request.model, request.padded_vocab(layout.tp), layout, pipeline_rank, request.optimizer_kernel
    )
    r = rehearsal.rank
    return [
        TermCheck("weights", estimate.weights, r.weight_bytes, 0),
        TermCheck("gradients", estimate.gradients, r.gradient_bytes, 0),
        TermCheck("optimizer", estimate.optimizer, r.optimizer_bytes, 0),
    ]


def verify_layout(
    request: PlanRequest, layout: ParallelLayout, pipeline_rank: Optional[int] = None, activations: bool = True
) -> LayoutCheck:
    """Rehearses the rank the planner reports: its peak pipeline rank (or `pipeline_rank`), tp rank 0, and the
    data-parallel rank with the most optimizer state."""
    pipeline_rank, dp_cp_rank = _planner_rank(request, layout, pipeline_rank)
    job = layout_job(request, layout)
    # The optimizer shards over the dp*cp group, whose ranks run cp fastest (megatron-core's order tp-cp-ep-dp-pp).
    rank = global_rank(job, layout.world_size, pp=pipeline_rank, cp=dp_cp_rank % layout.cp, dp=dp_cp_rank // layout.cp)
    rehearsal = rehearse(job, layout.world_size, rank, RehearsalOptions(activations=activations, checkpoint=False))
    terms = static_terms(request, layout, pipeline_rank, rehearsal)
    if rehearsal.activations is not None:
        terms += activation_terms(request, layout, rehearsal.activations)
    return LayoutCheck(layout, pipeline_rank, rank, terms, rehearsal)


def activation_terms(request: PlanRequest, layout: ParallelLayout, measured) -> List[TermCheck]:
    """One micro-batch through the measured chunk: what its forward stores for the backward, and its peak on top of
    the weights (the planner's in-flight activations are the stored figure times its in-flight chunks)."""
    from megatron_sota.planning.memory import planned_chunk_activations

    planned = planned_chunk_activations(
        request.model, request.padded_vocab(layout.tp), layout, measured.pipeline_rank, measured.vp_stage
    )
    return [
        TermCheck("act. stored", planned.stored_bytes, measured.stored_bytes, ACTIVATION_TOLERANCE),
        TermCheck("act. peak", planned.peak_bytes, measured.peak_bytes, ACTIVATION_TOLERANCE),
    ]


def format_checks(checks: List[LayoutCheck]) -> str:
    lines = []
    for check in checks:
        verdict = "ok" if check.ok else "MISMATCH"
        measured = check.rehearsal.activations
        chunk = f", chunk {measured.vp_stage} for one micro-batch" if measured is not None else ""
        lines.append(
            f"{check.layout.short()}: pipeline rank {check.pipeline_rank} (global rank {check.global_rank}{chunk}): {verdict}"
        )
        lines.append(f"  {'term':<12}{'planner GiB':>14}{'rehearsal GiB':>15}{'planner bytes':>18}{'rehearsal bytes':>18}  check")
        for t in check.terms:
            rule = "equal" if t.tolerance == 0 else f"within {t.tolerance:.0%}"
            lines.append(
                f"  {t.term:<12}{t.planner / GIB:>14.3f}{t.rehearsal / GIB:>15.3f}{t.planner:>18,}{t.rehearsal:>18,}  "
                f"{rule}: {'ok' if t.ok else 'NO'}"
            )
    return "\n".join(lines)


def checks_json(checks: List[LayoutCheck]) -> List[dict]:
    return [
        {
            "layout": c.layout.spec(), "pipeline_rank": c.pipeline_rank, "global_rank": c.global_rank, "ok": c.ok,
            "terms": [{"term": t.term, "planner": t.planner, "rehearsal": t.rehearsal, "tolerance": t.tolerance, "ok": t.ok}
                      for t in c.terms],
        }
        for c in checks
    ]
