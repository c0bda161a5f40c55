"""The fused attention kernel that returns the log-sum-exp, for one causal or fully visible block of CP attention.

It picks the kernel for a device and dtype and calls it on one block; it must not know the CP layout, merge blocks or
mask documents.

CPU: torch's flash-attention kernel for CPU (private aten ops, declared in runtime/upstream.py). Its `is_causal`
is aligned top-left, so a causal block must be square (queries and keys of the same positions). Heads may be
grouped (GQA: query head h reads key head h // group) in forward and backward. The caller widens its inputs to fp32.

CUDA: aten's flash-attention ops for fp16/bf16 where flash applies (head dim, GPU), else the memory-efficient ops
(fp32 too), else none (the caller's matmul blocks). Both take the inputs in their own dtype and return an fp32 lse;
the caller merges in fp32. Their `is_causal` alignment does not matter: every causal block the caller passes is
square, where top-left and bottom-right alignment coincide. K/V are expanded to the query heads (repeat_interleave)
and dK/dV summed over each group, as the efficient kernel has no grouped heads (flash's GQA is not relied on).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from megatron_sota.runtime.upstream import CPU_FLASH_ATTENTION, CUDA_FUSED_ATTENTION, applies

# Where the CUDA kernels find their ops (tests put CPU stand-ins here, leaving torch.ops itself alone).
CUDA_OPS = torch.ops.aten
# The efficient kernel's lse has its query rows padded to a multiple of this (not on ROCm): sliced off, padded back.
EFFICIENT_LSE_ROWS = 32


class FusedBlockKernel(NamedTuple):
    forward: Callable
    """(q, k, v, causal, scale) -> (out, lse): q [b, heads, s_q, d], k/v [b, kv_heads, s_k, d]; lse [b, heads, s_q]."""
    backward: Callable
    """(d_out, q, k, v, out, lse, causal, scale) -> (dq, dk, dv), given the output and lse of all blocks merged."""
    widen: bool = True
    """True: the caller passes fp32-at-least inputs; False: inputs in their own dtype (out may be too, lse is fp32)."""


def _cpu_forward(q, k, v, causal: bool, scale: float):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(q, k, v, 0.0, causal, scale=scale)


def _cpu_backward(d_out, q, k, v, out, lse, causal: bool, scale: float):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default(
        d_out, q, k, v, out, lse, 0.0, causal, scale=scale
    )


def expand_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[b, kv_heads, s, d] -> [b, heads, s, d]: query head h reads kv head h // group."""
    return t if t.size(1) == heads else t.repeat_interleave(heads // t.size(1), dim=1)


def sum_groups(grad: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[b, heads, s, d] -> [b, kv_heads, s, d], summed in fp32 at least over the query heads reading each kv head."""
    wide = torch.promote_types(grad.dtype, torch.float32)
    return grad.to(wide) if grad.size(1) == kv_heads else grad.unflatten(1, (kv_heads, -1)).sum(2, dtype=wide)


def _no_rng(q: torch.Tensor, shape, dtype) -> torch.Tensor:
    # Dropout is 0, so the kernels never read the RNG state; a tensor of the forward's shape and dtype stands in.
    return torch.empty(shape, dtype=dtype, device=q.device)


def _flash_forward(q, k, v, causal: bool, scale: float):
    heads = q.size(1)
    result = CUDA_OPS._scaled_dot_product_flash_attention.default(
        q, expand_heads(k, heads), expand_heads(v, heads), 0.0, causal, False, scale=scale
    )
    return result[0], result[1]


def _flash_backward(d_out, q, k, v, out, lse, causal: bool, scale: float):
    heads, kv_heads = q.size(1), k.size(1)
    dq, dk, dv = CUDA_OPS._scaled_dot_product_flash_attention_backward.default(
        d_out, q, expand_heads(k, heads), expand_heads(v, heads), out.to(q.dtype), lse.contiguous(),
        None, None, q.size(2), k.size(2),  # no cumulative sequence lengths: dense batches, as the forward returns
        0.0, causal, _no_rng(q, (2,), torch.uint64), _no_rng(q, (), torch.uint64), scale=scale,
    )
    return dq, sum_groups(dk, kv_heads), sum_groups(dv, kv_heads)


def _efficient_forward(q, k, v, causal: bool, scale: float):
    heads = q.size(1)
    out, lse = CUDA_OPS._scaled_dot_product_efficient_attention.default(
        q, expand_heads(k, heads), expand_heads(v, heads), None, True, 0.0, causal, scale=scale
    )[:2]
    return out, lse[..., : q.size(2)]


def _efficient_backward(d_out, q, k, v, out, lse, causal: bool, scale: float):
    heads, kv_heads = q.size(1), k.size(1)
    dq, dk, dv, _ = CUDA_OPS._scaled_dot_product_efficient_attention_backward.default(
        d_out, q, expand_heads(k, heads), expand_heads(v, heads), None, out.to(q.dtype),
        F.pad(lse, (0, -lse.size(-1) % EFFICIENT_LSE_ROWS)), _no_rng(q, (), torch.int64), _no_rng(q, (), torch.int64),
        0.0, [True, True, True, False], causal, scale=scale,
    )
    return dq, sum_groups(dk, kv_heads), sum_groups(dv, kv_heads)


FLASH = FusedBlockKernel(_flash_forward, _flash_backward, widen=False)
EFFICIENT = FusedBlockKernel(_efficient_forward, _efficient_backward, widen=False)


@functools.lru_cache(maxsize=None)
def _cpu_flash_applies() -> bool:
    return applies(CPU_FLASH_ATTENTION)  # once per process: it reads the installed versions (~1 ms)


@functools.lru_cache(maxsize=None)
def _cuda_kernel(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> Optional[FusedBlockKernel]:
    if not applies(CUDA_FUSED_ATTENTION):
        return None
    probe = torch.empty((1, heads, 1, head_dim), dtype=dtype, device=device)
    params = torch.backends.cuda.SDPAParams(probe, probe, probe, None, 0.0, True, False)
    if dtype in (torch.float16, torch.bfloat16) and torch.backends.cuda.can_use_flash_attention(params):
        return FLASH
    return EFFICIENT if torch.backends.cuda.can_use_efficient_attention(params) else None


def fused_block_kernel(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> Optional[FusedBlockKernel]:
    """The fused kernel for blocks of this dtype and shape on `device`, or None where the caller must use matmuls."""
    if device.type == "cpu":
        return FusedBlockKernel(_cpu_forward, _cpu_backward) if _cpu_flash_applies() else None
    if device.type == "cuda":
        return _cuda_kernel(device, dtype, heads, head_dim)
    return None
