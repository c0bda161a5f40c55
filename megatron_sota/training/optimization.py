"""Wraps model chunks in megatron-core DDP and builds its optimizer and LR/WD schedule.

Only configuration of megatron-core objects; the step itself lives in training/step.py.
"""

from __future__ import annotations

from typing import List

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig as McoreOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.config.optim import OptimizerConfig, SchedulerConfig
from megatron_sota.config.parallel import ParallelConfig


def wrap_for_training(
    chunks: List[torch.nn.Module], config: TransformerConfig, parallel: ParallelConfig, device: torch.device
) -> List[DistributedDataParallel]:
    """Moves chunks to the device, adds the half-precision wrapper, and wraps each in DDP."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=parallel.overlap_grad_reduce,
        overlap_param_gather=parallel.overlap_param_gather,
        use_distributed_optimizer=parallel.distributed_optimizer,
        # Non-finite gradients are not fatal here: the step detects them through the gradient norm
        # and skips the update (training/step.py), as fp16's loss scaler does for overflows.
        check_for_nan_in_grad=False,
    )
    wrapped = []
    for index, chunk in enumerate(chunks):
        chunk = chunk.to(device)
        if config.fp16 or config.bf16:
            chunk = Float16Module(config, chunk)
        wrapped.append(
            DistributedDataParallel(
                config=config,
                ddp_config=ddp_config,
                module=chunk,
                # Later chunks of interleaved pipelining reduce in one bucket, as Megatron-LM does.
                disable_bucketing=index > 0,
            )
        )
    # The schedules call this after the last backward: DP all-reduce, SP norm grads,
    # embedding grads between first/last stage, and 1/num_tokens scaling.
    config.finalize_model_grads_func = finalize_model_grads
    if parallel.overlap_grad_reduce:
        config.no_sync_func = [m.no_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    if parallel.overlap_param_gather and parallel.distributed_optimizer:
        config.param_sync_func = [m.start_param_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].start_param_sync
    return wrapped


def build_optimizer(
    opt: OptimizerConfig,
    sched: SchedulerConfig,
    parallel: ParallelConfig,
    config: TransformerConfig,
    initial_loss_scale: float,
    models,
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
    return get_megatron_optimizer(mcore_config, models)


def build_scheduler(optimizer, opt: OptimizerConfig, sched: SchedulerConfig, iters: int) -> OptimizerParamScheduler:
    """LR per iteration: linear warm-up, then cosine/constant/WSD down to min_lr_ratio * lr."""
    warmup = min(sched.warmup_iters, iters)
    decay_end = warmup + (sched.decay_iters if sched.decay_iters is not None else max(iters - warmup, 1))
    style = {"cosine": "cosine", "constant": "constant", "wsd": "WSD"}[sched.name]
    wsd_decay = sched.wsd_decay_iters if sched.wsd_decay_iters is not None else max(int(0.2 * decay_end), 1)
    return OptimizerParamScheduler(
        optimizer,
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
