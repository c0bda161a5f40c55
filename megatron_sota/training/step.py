"""One training or validation step through megatron-core's pipeline schedules.

It computes losses and gradients and applies the optimizer; it must not log or save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from megatron.core import parallel_state
from megatron.core.utils import get_batch_on_this_cp_rank

from megatron_sota.model.document_attention import document_ids
from megatron_sota.parallelize.pipeline import run_schedule
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
    metrics: Dict[str, float] = field(default_factory=dict)
    """The objective's other reported metrics (training/objective.py), each its sum over the global batch
    divided by its count; a metric no micro-batch reported (count 0) is left out."""
    totals: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    """(sum, count) over the global batch of every reported name, MAIN_METRIC included."""


MAIN_METRIC = "lm loss"
"""The report entry every objective's loss function fills: the loss that is trained and logged as `loss`."""

Totals = Dict[str, Tuple[float, float]]


ForwardStep = Callable[[Iterator[dict], torch.nn.Module], tuple]
"""megatron-core's forward_step_func: (data iterator, model chunk) -> (output, loss function of that output).
The loss function returns (loss_sum, count, report), report {name: tensor([sum, count])} with MAIN_METRIC
(training/objective.py). The objective of a run; post-training brings its own."""


def masked_token_loss(loss_mask: torch.Tensor, per_token_loss: torch.Tensor):
    """The loss function's (loss_sum, count, report) of the tokens `loss_mask` keeps; also post-training's SFT."""
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(per_token_loss.view(-1).float() * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), mask.sum().detach()])
    return loss_sum, num_tokens, {MAIN_METRIC: report}


def local_batch(
    batch: dict, device: torch.device, document_eod: Optional[int] = None, extra_keys: Sequence[str] = ()
) -> dict:
    """The micro-batch's [batch, seq] tensors on `device`, cut to this context-parallel rank's two of 2*cp chunks.

    megatron-core's load-balanced split (the whole sequence at cp=1), the one its RoPE slicing and our
    CP attention assume. Document ids (not under the key 'attention_mask', which the split cuts on dim 2):
    the batch's own `document_ids` (packed post-training rows), else with `document_eod`
    (data.reset_attention_mask) counted from the eod tokens over the whole row before the cut.
    `extra_keys`: an objective's own [batch, seq] tensors, cut alike.
    """
    keys = ("tokens", "labels", "loss_mask", "position_ids", *extra_keys)
    local = {key: batch[key].to(device, non_blocking=True) for key in keys}
    if "document_ids" in batch:
        local["document_ids"] = batch["document_ids"].to(device, non_blocking=True)
    elif document_eod is not None:
        local["document_ids"] = document_ids(local["tokens"], document_eod)
    return get_batch_on_this_cp_rank(local)


def _forward_step(device: torch.device, data_iterator: Iterator[dict], model, document_eod: Optional[int] = None):
    local = local_batch(next(data_iterator), device, document_eod)
    # attention_mask: None is causal over the row; document ids keep attention within each document.
    output = model(local["tokens"], local["position_ids"], local.get("document_ids"), labels=local["labels"])
    return output, partial(masked_token_loss, local["loss_mask"])


def next_token_loss(device: torch.device, document_eod: Optional[int] = None) -> ForwardStep:
    """Pretraining's objective: cross-entropy of every next token the batch's loss mask keeps.
    `document_eod` (TrainingState.document_eod): attention stays within the documents this token ends."""
    return partial(_forward_step, device, document_eod=document_eod)


def _reduce_reports(losses_reduced: List[dict], device: torch.device, names: Sequence[str]) -> torch.Tensor:
    """[len(names), 2]: each name's [sum, count] summed over micro-batches and DP ranks; last pipeline stage only."""
    totals = torch.zeros(len(names), 2, dtype=torch.float64, device=device)
    for item in losses_reduced:
        for row, name in enumerate(names):
            if name in item:
                totals[row] += item[name].to(torch.float64)
    torch.distributed.all_reduce(totals, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    return totals


def forward_backward_totals(
    models, data_iterators, num_microbatches, micro_batch_size, seq_length, forward_only, device,
    forward_step: Optional[ForwardStep] = None, metric_names: Sequence[str] = (),
) -> Totals:
    """Runs the pipeline schedule over one global batch; returns {name: (sum, count)} of MAIN_METRIC and
    `metric_names` over the whole global batch, the same on every rank (the last stage's, broadcast).

    Gradients (unless forward_only) are left in the DDP buffers, already reduced over DP and
    scaled by 1/count (the loss functions' second value) by megatron-core's finalize_model_grads.
    """
    names = (MAIN_METRIC, *[name for name in metric_names if name != MAIN_METRIC])
    values = run_schedule(
        models, forward_step or next_token_loss(device), data_iterators, num_microbatches, micro_batch_size,
        seq_length, forward_only, collect=partial(_reduce_reports, device=device, names=names),
        result_shape=(len(names), 2), device=device,
    )
    return {name: (values[row, 0].item(), values[row, 1].item()) for row, name in enumerate(names)}


def _main_loss(totals: Totals) -> tuple[float, int]:
    """(mean loss per counted unit, units) of MAIN_METRIC."""
    loss_sum, count = (torch.tensor(x, dtype=torch.float64) for x in totals[MAIN_METRIC])
    return (loss_sum / count.clamp(min=1)).item(), int(count.item())


def other_metrics(totals: Totals) -> Dict[str, float]:
    """Each reported name's sum / count, MAIN_METRIC and names no micro-batch reported (count 0) left out."""
    return {name: s / c for name, (s, c) in totals.items() if name != MAIN_METRIC and c > 0}


def forward_backward(
    models, data_iterators, num_microbatches, micro_batch_size, seq_length, forward_only, device,
    forward_step: Optional[ForwardStep] = None,
):
    """forward_backward_totals' (mean loss per token, tokens) of MAIN_METRIC, the same on every rank."""
    totals = forward_backward_totals(
        models, data_iterators, num_microbatches, micro_batch_size, seq_length, forward_only, device, forward_step
    )
    return _main_loss(totals)


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
    timer: Optional[PhaseTimer] = None,
    forward_step: Optional[ForwardStep] = None,
    metric_names: Sequence[str] = (),
) -> StepResult:
    """One optimizer step over a global batch; `timer` (benchmarks) times its phases, `forward_step`
    replaces the next-token objective, whose loss functions also report `metric_names`."""
    with phase(timer, "zero_grad"):
        for model in models:
            model.zero_grad_buffer()
        optimizer.zero_grad()
    with phase(timer, "forward_backward"):
        totals = forward_backward_totals(
            models, data_iterators, num_microbatches, micro_batch_size, seq_length, False, device, forward_step,
            metric_names,
        )
        loss, tokens = _main_loss(totals)
    with phase(timer, "optimizer"):
        updated, grad_norm, reason = _apply_update(optimizer, loss)
        if updated:
            scheduler.step(increment=1)
    return StepResult(
        loss=loss, num_tokens=tokens, grad_norm=grad_norm, skipped=not updated, skip_reason=reason,
        metrics=other_metrics(totals), totals=totals,
    )


@torch.no_grad()
def eval_step(
    models, data_iterators, num_microbatches, micro_batch_size, seq_length, device,
    forward_step: Optional[ForwardStep] = None,
    metric_names: Sequence[str] = (),
) -> StepResult:
    for model in models:
        model.eval()
    try:
        totals = forward_backward_totals(
            models, data_iterators, num_microbatches, micro_batch_size, seq_length, True, device, forward_step,
            metric_names,
        )
    finally:
        for model in models:
            model.train()
    loss, tokens = _main_loss(totals)
    return StepResult(loss=loss, num_tokens=tokens, metrics=other_metrics(totals), totals=totals)
