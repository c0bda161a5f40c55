"""Typed configuration of the parallel layout (the `parallel` group of conf/).

Data-parallel size is never configured: it is derived from the world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Megatron-FSDP's data_parallel_sharding_strategy values (megatron-core 0.16.1), plus none for plain DDP.
FSDP_STRATEGIES = ("none", "optim", "optim_grads", "optim_grads_params")
# Why parallel.fsdp needs pp=1: what megatron-core 0.16.1's FSDP adapter does (_get_dp_tp_mesh), which fails otherwise.
FSDP_WITHOUT_PIPELINE = "Megatron-FSDP (megatron-core 0.16.1) lays its device mesh over the whole world as dp x tp, so it runs without pipeline stages"
# parallel.fsdp_impl: megatron-core's Megatron-FSDP, or PyTorch FSDP2 through megatron-core's TorchFullyShardedDataParallel.
FSDP_IMPLS = ("megatron", "torch")

# How the SDPA context-parallel attention exchanges K/V (megatron-core's cp_comm_type names).
CP_COMM_TYPES = ("all_gather", "p2p")


@dataclass
class ParallelConfig:
    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    vpp: Optional[int] = None
    """Virtual pipeline stages per rank (interleaved 1F1B); null or 1 means non-interleaved."""
    cp: int = 1
    """Context-parallel size (needs Transformer Engine's attention)."""
    cp_comm_type: str = "p2p"
    """How CP attention exchanges keys and values: p2p (a ring, each transfer overlapped with a block's compute;
    megatron-core's and TE's default) or all_gather (at once: cp times the local K/V held)."""
    sp: bool = False
    """Sequence parallelism (needs tp > 1)."""
    distributed_optimizer: bool = True
    """Shard optimizer state over data-parallel ranks (ZeRO-1)."""
    fsdp: str = "none"
    """Fully sharded data parallelism through megatron-core's Megatron-FSDP: none (DDP; with distributed_optimizer,
    ZeRO-1), optim (optimizer states and fp32 main weights sharded, ZeRO-1), optim_grads (also gradients, ZeRO-2)
    or optim_grads_params (also the weights, gathered one transformer layer at a time, ZeRO-3). With
    fsdp_impl=megatron it needs distributed_optimizer=true and pp=1."""
    fsdp_impl: str = "megatron"
    """Which implementation parallel.fsdp uses: megatron (megatron-core's Megatron-FSDP, every strategy) or torch
    (PyTorch FSDP2 through megatron-core's TorchFullyShardedDataParallel: optim_grads_params only, with
    distributed_optimizer=false, fp32, pp=1, cp=1; config/validation.py lists what it refuses)."""
    overlap_grad_reduce: bool = False
    """Overlap data-parallel gradient reduce-scatter with the backward pass (GPU)."""
    overlap_param_gather: bool = False
    """Overlap the distributed optimizer's parameter all-gather with the next forward (GPU)."""

    @property
    def virtual_stages(self) -> int:
        return self.vpp or 1
