"""The context-parallel attention's math equals full causal (and per-document) attention, forward and backward.

Every CP rank is simulated in one process from the same full tensors; the multi-rank run through a real
process group is tests/distributed/test_context_parallel_attention.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_sota.model.context_parallel_attention import _heads_first, _seq_first, attend_backward, attend_forward


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


@pytest.mark.parametrize("cp", [1, 2, 3, 4])
@pytest.mark.parametrize("docs", [None, DOCS], ids=["causal", "documents"])
def test_cp_ranks_together_equal_full_attention_forward_and_backward(cp, docs):
    q, k, v = inputs(24)
    scale = 8 ** -0.5
    expected = reference(q, k, v, docs, scale)
    d_out = torch.randn_like(expected)
    expected.backward(d_out)
    kv_heads = k.size(2)
    k_all, v_all = (in_rank_order(t.detach(), cp, 0).permute(1, 2, 0, 3) for t in (k, v))
    docs_all = None if docs is None else in_rank_order(docs, cp, 1)
    dk_sum = dv_sum = 0
    for rank in range(cp):
        docs_q = None if docs is None else cp_split(docs, cp, rank, 1)
        q_local = _heads_first(cp_split(q.detach(), cp, rank, 0), kv_heads)
        # A query tile of 5 rows: tiles that end inside a chunk, and a last short one.
        out, lse = attend_forward(q_local, k_all, v_all, rank, cp, scale, docs_q, docs_all, tile=5)
        torch.testing.assert_close(_seq_first(out), cp_split(expected.detach(), cp, rank, 0), rtol=1e-10, atol=1e-12)
        d_local = _heads_first(cp_split(d_out, cp, rank, 0), kv_heads)
        dq, dk, dv = attend_backward(d_local, q_local, k_all, v_all, out, lse, rank, cp, scale, docs_q, docs_all, tile=5)
        torch.testing.assert_close(_seq_first(dq), cp_split(q.grad, cp, rank, 0), rtol=1e-10, atol=1e-12)
        dk_sum, dv_sum = dk_sum + dk, dv_sum + dv
    torch.testing.assert_close(dk_sum, in_rank_order(k.grad, cp, 0).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dv_sum, in_rank_order(v.grad, cp, 0).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)


def test_bf16_inputs_are_attended_in_fp32():
    q, k, v = (t.detach().to(torch.bfloat16) for t in inputs(8))
    out, lse = attend_forward(_heads_first(q, 2), k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3), 0, 1, 0.5)
    assert out.dtype == lse.dtype == torch.float32
    expected = reference(*(t.float() for t in (q, k, v)), None, 0.5)
    torch.testing.assert_close(_seq_first(out), expected, rtol=1e-5, atol=1e-6)
