"""One training or validation step through megatron-core's pipeline schedules.

It computes losses and gradients and applies the optimizer; it must not log or save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Iterator, List, Optional

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_sota.runtime.phase_timer import PhaseTimer, phase


@dataclass
class StepResult:
    loss: float
    """Mean loss per token over the whole global batch (all micro-batches, all DP ranks)."""
    num_tokens: int
    grad_norm: Optional[float] = None
    skipped: bool = False
    skip_reason: Optional[str] = None
    """'overflow' (fp16 loss scaler backs off) or 'non-finite' (NaN/Inf loss or gradient norm)."""


def _loss_func(loss_mask: torch.Tensor, poison: bool, per_token_loss: torch.Tensor):
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(per_token_loss.view(-1).float() * mask)
    if poison:  # fault injection (tests): a NaN loss, hence NaN gradients
        loss_sum = loss_sum * float("nan")
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), mask.sum().detach()])
    return loss_sum, num_tokens, {"lm loss": report}


def _forward_step(device: torch.device, poison: bool, data_iterator: Iterator[dict], model):
    batch = next(data_iterator)
    tokens = batch["tokens"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    loss_mask = batch["loss_mask"].to(device, non_blocking=True)
    position_ids = batch["position_ids"].to(device, non_blocking=True)
    output = model(tokens, position_ids, None, labels=labels)
    return output, partial(_loss_func, loss_mask, poison)


def _reduce_loss(losses_reduced: List[dict], device: torch.device) -> tuple[float, int]:
    """Sums (loss, tokens) over micro-batches and DP ranks; last pipeline stage only."""
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for item in losses_reduced:
        totals += item["lm loss"].to(torch.float64)
    torch.distributed.all_reduce(totals, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    return (totals[0] / totals[1].clamp(min=1)).item(), int(totals[1].item())


def _broadcast_from_last_stage(values: torch.Tensor) -> torch.Tensor:
    """Every rank logs the same numbers, so the last pipeline stage shares its loss."""
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(
            values,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
    return values


def forward_backward(
    models, data_iterators, num_microbatches, micro_batch_size, seq_length, forward_only, device, poison=False
):
    """Runs the pipeline schedule over one global batch; returns (mean loss per token, tokens).

    Gradients (unless forward_only) are left in the DDP buffers, already reduced over DP and
    scaled by 1/tokens by megatron-core's finalize_model_grads.
    """
    schedule = get_forward_backward_func()
    data = data_iterators if len(models) > 1 else data_iterators[0]
    model = models if len(models) > 1 else models[0]
    losses_reduced = schedule(
        forward_step_func=partial(_forward_step, device, poison),
        data_iterator=data,
        model=model,
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )
    values = torch.zeros(2, dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        loss, tokens = _reduce_loss(losses_reduced, device)
        values[0], values[1] = loss, tokens
    values = _broadcast_from_last_stage(values)
    return values[0].item(), int(values[1].item())


def _apply_update(optimizer, loss: float) -> tuple[bool, Optional[float], Optional[str]]:
    """megatron-core's optimizer step, split so that a non-finite step is skipped, not applied.

    Every rank takes the same decision: the loss is shared by all ranks and the gradient norm
    is reduced over the whole model.
    """
    if optimizer.prepare_grads():  # fp16: inf/nan after unscaling; the scaler has backed off
        return False, None, "overflow"
    clip_grad = optimizer.config.clip_grad
    grad_norm = optimizer.clip_grad_norm(clip_grad) if clip_grad > 0 else optimizer.get_grad_norm()
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        return False, grad_norm, "non-finite"
    return optimizer.step_with_ready_grads(), grad_norm, None


def train_step(
    models, optimizer, scheduler, data_iterators, num_microbatches, micro_batch_size, seq_length, device,
    poison: bool = False,
    timer: Optional[PhaseTimer] = None,
) -> StepResult:
    """One optimizer step over a global batch; `timer` (benchmarks) times its phases."""
    with phase(timer, "zero_grad"):
        for model in models:
            model.zero_grad_buffer()
        optimizer.zero_grad()
    with phase(timer, "forward_backward"):
        loss, tokens = forward_backward(
            models, data_iterators, num_microbatches, micro_batch_size, seq_length, False, device, poison
        )
    with phase(timer, "optimizer"):
        updated, grad_norm, reason = _apply_update(optimizer, loss)
        if updated:
            scheduler.step(increment=1)
    return StepResult(loss=loss, num_tokens=tokens, grad_norm=grad_norm, skipped=not updated, skip_reason=reason)


@torch.no_grad()
def eval_step(models, data_iterators, num_microbatches, micro_batch_size, seq_length, device) -> StepResult:
    for model in models:
        model.eval()
    try:
        loss, tokens = forward_backward(models, data_iterators, num_microbatches, micro_batch_size, seq_length, True, device)
    finally:
        for model in models:
            model.train()
    return StepResult(loss=loss, num_tokens=tokens)
