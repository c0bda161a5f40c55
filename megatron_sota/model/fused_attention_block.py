"""The fused attention kernel that returns the log-sum-exp, for one causal or fully visible block of CP attention.

It picks the kernel for a device and calls it on one block; it must not know the CP layout, merge blocks or mask
documents.

CPU: torch's flash-attention kernel for CPU (private aten ops, declared in runtime/upstream.py). Its `is_causal`
is aligned top-left, so a causal block must be square (queries and keys of the same positions). Heads may be
grouped (GQA: query head h reads key head h // group) in forward and backward. GPU: no fused kernel is wired yet
(flash and cuDNN need their own schemas and RNG state); the caller's matmul blocks run there.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import torch

from megatron_sota.runtime.upstream import CPU_FLASH_ATTENTION, applies


class FusedBlockKernel(NamedTuple):
    forward: Callable
    """(q, k, v, causal, scale) -> (out, lse): q [b, heads, s_q, d], k/v [b, kv_heads, s_k, d]; lse [b, heads, s_q]."""
    backward: Callable
    """(d_out, q, k, v, out, lse, causal, scale) -> (dq, dk, dv), given the output and lse of all blocks merged."""


def _cpu_forward(q, k, v, causal: bool, scale: float):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(q, k, v, 0.0, causal, scale=scale)


def _cpu_backward(d_out, q, k, v, out, lse, causal: bool, scale: float):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default(
        d_out, q, k, v, out, lse, 0.0, causal, scale=scale
    )


@functools.lru_cache(maxsize=None)
def _cpu_flash_applies() -> bool:
    return applies(CPU_FLASH_ATTENTION)  # once per process: it reads the installed versions (~1 ms)


def fused_block_kernel(device: torch.device) -> Optional[FusedBlockKernel]:
    """The fused kernel for blocks on `device`, or None where the caller must compute blocks with matmuls."""
    if device.type == "cpu" and _cpu_flash_applies():
        return FusedBlockKernel(_cpu_forward, _cpu_backward)
    return None
