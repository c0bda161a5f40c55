"""Wraps model chunks in megatron-core's DistributedDataParallel and sets the schedule hooks that go with it.

A step of its own between building the model and building its optimizer; it must not choose
shapes or kernels (model/) nor construct the optimizer (training/optimization.py).
"""

from __future__ import annotations

from typing import List

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.parallelize.fsdp import wrap_in_fsdp
from megatron_sota.parallelize.torch_fsdp import wrap_in_torch_fsdp


def wrap_in_ddp(
    chunks: List[torch.nn.Module], config: TransformerConfig, parallel: ParallelConfig, device: torch.device
) -> list:
    """Moves chunks to the device, adds the half-precision wrapper, and wraps each in DDP (or, with
    parallel.fsdp, in Megatron-FSDP: parallelize/fsdp.py; with parallel.fsdp_impl=torch, in FSDP2: torch_fsdp.py).

    Also tells the schedules (through `config`) how to finish gradients and, with overlap,
    how to hold back and start the DP communication.
    """
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=parallel.overlap_grad_reduce,
        overlap_param_gather=parallel.overlap_param_gather,
        use_distributed_optimizer=parallel.distributed_optimizer,
        # Non-finite gradients are not fatal here: the step detects them through the gradient norm
        # and skips the update (training/step.py), as fp16's loss scaler does for overflows.
        check_for_nan_in_grad=False,
    )
    chunks = [chunk.to(device) for chunk in chunks]
    if config.fp16 or config.bf16:
        chunks = [Float16Module(config, chunk) for chunk in chunks]
    if parallel.fsdp != "none" and parallel.fsdp_impl == "torch":
        wrapped = wrap_in_torch_fsdp(chunks, config, ddp_config)
    elif parallel.fsdp != "none":
        wrapped = wrap_in_fsdp(chunks, config, ddp_config, parallel.fsdp, device)
    else:
        wrapped = [
            # Later chunks of interleaved pipelining reduce in one bucket, as Megatron-LM does.
            DistributedDataParallel(config=config, ddp_config=ddp_config, module=chunk, disable_bucketing=index > 0)
            for index, chunk in enumerate(chunks)
        ]
    # The schedules call this after the last backward: DP all-reduce, SP norm grads,
    # embedding grads between first/last stage, and 1/num_tokens scaling.
    config.finalize_model_grads_func = finalize_model_grads
    if parallel.overlap_grad_reduce:
        config.no_sync_func = [m.no_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    if parallel.overlap_param_gather and parallel.distributed_optimizer:
        config.param_sync_func = [m.start_param_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].start_param_sync
    return wrapped


def scale_losses_by(config: TransformerConfig, optimizer) -> None:
    """The schedules multiply each micro-batch loss by the optimizer's current loss scale (1 unless
    fp16); the optimizer divides the gradients by it again before clipping and the update."""
    config.grad_scale_func = optimizer.scale_loss
