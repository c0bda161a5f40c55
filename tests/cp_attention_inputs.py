"""Inputs and the full-attention reference for the context-parallel attention tests (single-process and gloo).

Builds tensors only; it must not run the CP attention itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cp_split(t: torch.Tensor, cp: int, rank: int, dim: int) -> torch.Tensor:
    """megatron-core's load-balanced split: chunks rank and 2*cp-1-rank of 2*cp."""
    c = t.size(dim) // (2 * cp)
    return torch.cat([t.narrow(dim, rank * c, c), t.narrow(dim, (2 * cp - 1 - rank) * c, c)], dim)


def in_rank_order(t: torch.Tensor, cp: int, dim: int) -> torch.Tensor:
    """What all-gathering every rank's chunks gives."""
    return torch.cat([cp_split(t, cp, r, dim) for r in range(cp)], dim)


def reference(q, k, v, docs, scale):
    """Full attention with SDPA ([s, b, heads, d] in and out); a dense mask is fine at test sizes."""
    s = q.size(0)
    allowed = torch.ones(s, s, dtype=torch.bool).tril()
    if docs is not None:
        allowed = allowed & (docs[:, :, None] == docs[:, None, :])[:, None]
    qq, kk, vv = (t.permute(1, 2, 0, 3) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=allowed, scale=scale, enable_gqa=True)
    return out.permute(2, 0, 1, 3)


def inputs(seq, batch=2, heads=4, kv_heads=2, dim=8):
    gen = torch.Generator().manual_seed(seq)
    make = lambda h: torch.randn(seq, batch, h, dim, generator=gen, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


# Two rows: documents of 5, 10 and 9 tokens (boundaries inside chunks at every cp below), and one document.
DOCS = torch.tensor([[0] * 5 + [1] * 10 + [2] * 9, [7] * 24])
