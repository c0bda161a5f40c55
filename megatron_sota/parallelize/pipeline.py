"""Runs megatron-core's pipeline schedule over this rank's model chunks and shares the last stage's result.

Training steps and evaluation scoring both go through here, so that every pipeline rank ends with
the same numbers; what a micro-batch computes (the forward step) is the caller's.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func


def run_schedule(
    models: Sequence[torch.nn.Module],
    forward_step: Callable,
    data_iterators: List,
    num_microbatches: int,
    micro_batch_size: int,
    seq_length: int,
    forward_only: bool,
    collect: Callable[[list], torch.Tensor],
    result_shape: tuple,
    device: torch.device,
) -> torch.Tensor:
    """One pass of the schedule (one data iterator per model chunk); returns a float64 tensor of
    `result_shape`, filled by `collect` from the last stage's per-micro-batch outputs and broadcast
    from there to every pipeline stage, so that every rank sees the same result."""
    outputs = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=data_iterators if len(models) > 1 else data_iterators[0],
        model=list(models) if len(models) > 1 else models[0],
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )
    result = torch.zeros(result_shape, dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        result.copy_(collect(outputs))
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(
            result,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
    return result
