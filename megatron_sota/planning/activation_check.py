"""The planner's activation figure for one micro-batch through one model chunk, for comparison with the fake-tensor measure.

The figure itself lives in planning/memory.py (planned_chunk_activations, which estimate_rank_memory composes: the
in-flight micro-batches' stored bytes and one chunk's backward peak); this module only names it for the rehearsal's
checks (rehearsal/verify.py, rehearsal/run.py), with the issue's bound.
"""

from __future__ import annotations

from megatron_sota.planning.memory import PlannedActivations, layout_of, planned_chunk_activations

TOLERANCE = 0.10
"""The issue's bound on the planner's activation term against the fake-tensor peak."""

__all__ = ["PlannedActivations", "TOLERANCE", "layout_of", "planned_chunk_activations"]
