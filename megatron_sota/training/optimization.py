"""Builds megatron-core's optimizer over DDP-wrapped model chunks, and its LR/WD schedule.

Only configuration of megatron-core objects; wrapping the chunks is parallelize/ddp.py's, the step training/step.py's.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from megatron.core.optimizer import OptimizerConfig as McoreOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.checkpointing.contents import torch_optimizers
from megatron_sota.config.optim import OptimizerConfig, SchedulerConfig
from megatron_sota.config.parallel import ParallelConfig


def build_optimizer(
    opt: OptimizerConfig,
    sched: SchedulerConfig,
    parallel: ParallelConfig,
    config: TransformerConfig,
    initial_loss_scale: float,
    models,
    param_group_overrides: Optional[dict] = None,
    fused_adam: bool = False,
):
    mcore_config = McoreOptimizerConfig(
        optimizer="adam",
        lr=opt.lr,
        # The scheduler reads each param group's floor from here.
        min_lr=opt.lr * sched.min_lr_ratio,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.beta1,
        adam_beta2=opt.beta2,
        adam_eps=opt.eps,
        clip_grad=opt.clip_grad,
        bf16=config.bf16,
        fp16=config.fp16,
        params_dtype=config.params_dtype,
        initial_loss_scale=initial_loss_scale,
        use_distributed_optimizer=parallel.distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(mcore_config, models, config_overrides=param_group_overrides)
    if fused_adam:
        run_torch_adam_fused(optimizer)
    return optimizer


def run_torch_adam_fused(optimizer) -> int:
    """Makes every torch Adam/AdamW megatron-core built step with torch's fused kernel; returns how many.

    Without Transformer Engine or apex (every CPU run, a bare GPU install), megatron-core builds
    `torch.optim.AdamW` without choosing an implementation: torch runs its per-parameter loop on CPU
    (seven tensor passes, a Python call each, per parameter) and `foreach` on CUDA. The fused kernel does
    the update in one pass (about 5x faster than the loop on CPU), is what transformers' Trainer uses by
    default (`adamw_torch_fused` with torch >= 2.8), equals the loop within float32 rounding, and needs no
    temporaries (`foreach` would need one fp32 copy of all the parameters it steps; the planner's
    `--optimizer-kernel` models each). The flag is set before every step (a step pre-hook) because loading
    a checkpoint replaces the param groups with the saved ones. TE's and apex's FusedAdam are left alone.
    """
    count = 0
    for inner in torch_optimizers(optimizer):
        if type(inner) in (torch.optim.Adam, torch.optim.AdamW):
            inner.register_step_pre_hook(_fused_before_step)
            count += 1
    return count


def _fused_before_step(inner: torch.optim.Optimizer, args, kwargs) -> None:
    for group in inner.param_groups:
        group["fused"], group["foreach"] = True, False


def schedule_settings(opt: OptimizerConfig, sched: SchedulerConfig, iters: int) -> Dict[str, Any]:
    """The LR/WD schedule of a config as megatron-core's OptimizerParamScheduler arguments: linear warm-up,
    then cosine/constant/WSD down to min_lr_ratio * lr. Needs no optimizer, so a resume can compare it early."""
    warmup = min(sched.warmup_iters, iters)
    decay_end = warmup + (sched.decay_iters if sched.decay_iters is not None else max(iters - warmup, 1))
    style = {"cosine": "cosine", "constant": "constant", "wsd": "WSD"}[sched.name]
    wsd_decay = sched.wsd_decay_iters if sched.wsd_decay_iters is not None else max(int(0.2 * decay_end), 1)
    return dict(
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.lr * sched.min_lr_ratio,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay_end,
        lr_decay_style=style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=decay_end,
        wd_incr_style="constant",
        wsd_decay_steps=wsd_decay if style == "WSD" else None,
        lr_wsd_decay_style=sched.wsd_decay_style if style == "WSD" else None,
    )


def build_scheduler(
    optimizer, opt: OptimizerConfig, sched: SchedulerConfig, iters: int, follow_checkpoint: bool = True
) -> OptimizerParamScheduler:
    """LR per iteration (schedule_settings). On loading a checkpoint, its schedule wins unless
    `follow_checkpoint` is false (scheduler.changed_at_resume=config); the step count is always the checkpoint's."""
    return OptimizerParamScheduler(
        optimizer,
        use_checkpoint_opt_param_scheduler=follow_checkpoint,
        override_opt_param_scheduler=not follow_checkpoint,
        **schedule_settings(opt, sched, iters),
    )
