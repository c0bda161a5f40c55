"""One rehearsal of one rank: its build (rank.py), optionally its activations under fake tensors (activations.py)
and the time its real initialisation takes (init_cost.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from megatron_sota.config.job import JobConfig
from megatron_sota.rehearsal.rank import RankReport, layout_problems, rehearse_rank, stage_ranks

__all__ = ["Rehearsal", "RehearsalOptions", "layout_problems", "rehearse", "stage_ranks"]


@dataclass(frozen=True)
class RehearsalOptions:
    activations: bool = True
    """Run one micro-batch forward and backward under fake tensors (seconds for a 175B rank)."""
    init_time: bool = False
    """Time one layer's real initialisation on this CPU (allocates that layer for real)."""
    checkpoint: bool = True
    """Build the checkpoint's sharded state dict and list this rank's shards."""


@dataclass(frozen=True)
class Rehearsal:
    rank: RankReport
    activations: Optional[Any] = None
    """activations.ActivationMeasure, when asked for."""
    init: Optional[Any] = None
    """init_cost.InitCost, when asked for."""
    inflight: int = 1
    """Model-chunk forwards the pipeline schedule holds at once on this rank (planning.memory.inflight_chunks)."""


def rehearse(job: JobConfig, world_size: int, rank: int, options: RehearsalOptions = RehearsalOptions()) -> Rehearsal:
    report = rehearse_rank(job, world_size, rank, checkpoint=options.checkpoint)
    activations = init = None
    if options.activations:
        from megatron_sota.rehearsal.activations import measure_activations

        activations = measure_activations(job, world_size, rank)
    if options.init_time:
        from megatron_sota.rehearsal.init_cost import time_layer_init

        init = time_layer_init(job, rank, world_size)
    from megatron_sota.planning.memory import inflight_chunks, layout_of

    inflight = inflight_chunks(layout_of(job, world_size), report.coordinates["pp"])
    return Rehearsal(report, activations, init, inflight)
