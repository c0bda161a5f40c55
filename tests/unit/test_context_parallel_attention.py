"""The context-parallel attention's math equals full causal (and per-document) attention, forward and backward.

Every CP rank is simulated in one process from the same full tensors; the multi-rank run through a real
process group is tests/distributed/test_context_parallel_attention.py.
"""

from __future__ import annotations

import pytest
import torch

from megatron_sota.model import context_parallel_attention as cpa
from megatron_sota.model.context_parallel_attention import (
    _heads_first,
    _seq_first,
    attend_backward,
    attend_forward,
    backward_blocks,
    empty_merge,
    forward_blocks,
)
from megatron_sota.model.fused_attention_block import FusedBlockKernel
from tests.cp_attention_inputs import DOCS, cp_split, in_rank_order, inputs, reference


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls of the fused block kernel (CPU flash attention) made by the CP attention."""
    real = cpa.fused_block_kernel(torch.device("cpu"), torch.float64, 4, 8)
    assert real is not None, "torch has no fused CPU attention kernel returning the log-sum-exp"
    calls = {"forward": 0, "backward": 0}

    def counted(name):
        def call(*args):
            calls[name] += 1
            return getattr(real, name)(*args)

        return call

    counting = FusedBlockKernel(counted("forward"), counted("backward"))
    monkeypatch.setattr(cpa, "fused_block_kernel", lambda *chosen_by: counting)
    return calls


def _full_attention_case(docs):
    """Inputs, their scale, the full-attention output (its backward already run with d_out) and d_out."""
    q, k, v = inputs(24)
    scale = 8 ** -0.5
    expected = reference(q, k, v, docs, scale)
    d_out = torch.randn_like(expected)
    expected.backward(d_out)
    return q, k, v, scale, expected, d_out


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "matmul"])
@pytest.mark.parametrize("cp", [1, 2, 3, 4])
@pytest.mark.parametrize("docs", [None, DOCS], ids=["causal", "documents"])
def test_cp_ranks_together_equal_full_attention_forward_and_backward(cp, docs, fused, kernel_calls):
    q, k, v, scale, expected, d_out = _full_attention_case(docs)
    kv_heads = k.size(2)
    k_all, v_all = (in_rank_order(t.detach(), cp, 0).permute(1, 2, 0, 3) for t in (k, v))
    docs_all = None if docs is None else in_rank_order(docs, cp, 1)
    dk_sum = dv_sum = 0
    for rank in range(cp):
        docs_q = None if docs is None else cp_split(docs, cp, rank, 1)
        q_local = _heads_first(cp_split(q.detach(), cp, rank, 0), kv_heads)
        # Matmul blocks of 5 query rows: tiles that end inside a chunk, and a last short one (fused: whole chunks).
        out, lse = attend_forward(q_local, k_all, v_all, rank, cp, scale, docs_q, docs_all, tile=5, fused=fused)
        torch.testing.assert_close(_seq_first(out), cp_split(expected.detach(), cp, rank, 0), rtol=1e-10, atol=1e-12)
        d_local = _heads_first(cp_split(d_out, cp, rank, 0), kv_heads)
        dq, dk, dv = attend_backward(
            d_local, q_local, k_all, v_all, out, lse, rank, cp, scale, docs_q, docs_all, tile=5, fused=fused
        )
        torch.testing.assert_close(_seq_first(dq), cp_split(q.grad, cp, rank, 0), rtol=1e-10, atol=1e-12)
        dk_sum, dv_sum = dk_sum + dk, dv_sum + dv
    torch.testing.assert_close(dk_sum, in_rank_order(k.grad, cp, 0).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dv_sum, in_rank_order(v.grad, cp, 0).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)
    # Without document ids the fused kernel computes every block: rank r has r + 1 and 2*cp - r key chunks to see.
    blocks = cp * (2 * cp + 1) if fused and docs is None else 0
    assert kernel_calls == {"forward": blocks, "backward": blocks}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "matmul"])
@pytest.mark.parametrize("cp", [1, 2, 3, 4])
@pytest.mark.parametrize("docs", [None, DOCS], ids=["causal", "documents"])
def test_ring_steps_one_source_at_a_time_equal_full_attention(cp, docs, fused, kernel_calls):
    """The p2p exchange's blocks: at step t rank r sees only rank (r - t) mod cp's two chunks (no process group here)."""
    q, k, v, scale, expected, d_out = _full_attention_case(docs)
    kv_heads = k.size(2)
    split = lambda t, rank, dim=0: cp_split(t, cp, rank, dim)  # noqa: E731
    own_k, own_v = ([split(t.detach(), r).permute(1, 2, 0, 3) for r in range(cp)] for t in (k, v))
    own_docs = [None if docs is None else split(docs, r, 1) for r in range(cp)]
    dk_sum, dv_sum = [0] * cp, [0] * cp
    for rank in range(cp):
        q_local, d_local = (_heads_first(split(t, rank), kv_heads) for t in (q.detach(), d_out))
        ring = [(rank - step) % cp for step in range(cp)]
        out, lse = empty_merge(q_local)
        for s in ring:
            forward_blocks(out, lse, q_local, own_k[s], own_v[s], rank, cp, scale, own_docs[rank], own_docs[s], 5, fused, s)
        torch.testing.assert_close(_seq_first(out), split(expected.detach(), rank), rtol=1e-10, atol=1e-12)
        dq = torch.zeros_like(q_local)
        for s in ring:
            dk, dv = torch.zeros_like(own_k[s]), torch.zeros_like(own_v[s])
            backward_blocks(
                (dq, dk, dv), d_local, q_local, own_k[s], own_v[s], out, lse, rank, cp, scale, own_docs[rank],
                own_docs[s], 5, fused, s,
            )
            dk_sum[s], dv_sum[s] = dk_sum[s] + dk, dv_sum[s] + dv
        torch.testing.assert_close(_seq_first(dq), split(q.grad, rank), rtol=1e-10, atol=1e-12)
    for owner in range(cp):
        torch.testing.assert_close(dk_sum[owner], split(k.grad, owner).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dv_sum[owner], split(v.grad, owner).permute(1, 2, 0, 3), rtol=1e-10, atol=1e-12)
    # Fully masked blocks are skipped: the same blocks as with every rank's keys at once.
    blocks = cp * (2 * cp + 1) if fused and docs is None else 0
    assert kernel_calls == {"forward": blocks, "backward": blocks}


@pytest.mark.parametrize("cp", [2, 3])
def test_fused_blocks_equal_matmul_blocks_and_full_attention_at_fp32(cp, kernel_calls):
    q, k, v = (t.detach().float() for t in inputs(48, heads=6, kv_heads=2, dim=16))
    scale = 16 ** -0.5
    k_all, v_all = (in_rank_order(t, cp, 0).permute(1, 2, 0, 3) for t in (k, v))
    d_out = torch.randn_like(q)
    for rank in range(cp):
        q_local, d_local = (_heads_first(cp_split(t, cp, rank, 0), 2) for t in (q, d_out))
        results = {}
        for fused in (True, False):
            out, lse = attend_forward(q_local, k_all, v_all, rank, cp, scale, fused=fused)
            grads = attend_backward(d_local, q_local, k_all, v_all, out, lse, rank, cp, scale, fused=fused)
            results[fused] = (out, lse) + grads
        for fused_result, matmul_result in zip(results[True], results[False]):
            torch.testing.assert_close(fused_result, matmul_result, rtol=1e-5, atol=1e-5)
        expected = cp_split(reference(q, k, v, None, scale), cp, rank, 0)
        torch.testing.assert_close(_seq_first(results[True][0]), expected, rtol=1e-5, atol=1e-5)
    assert kernel_calls == {"forward": cp * (2 * cp + 1), "backward": cp * (2 * cp + 1)}


def test_bf16_inputs_are_attended_in_fp32():
    q, k, v = (t.detach().to(torch.bfloat16) for t in inputs(8))
    out, lse = attend_forward(_heads_first(q, 2), k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3), 0, 1, 0.5)
    assert out.dtype == lse.dtype == torch.float32
    expected = reference(*(t.float() for t in (q, k, v)), None, 0.5)
    torch.testing.assert_close(_seq_first(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("comm_type", ["all_gather", "p2p"])
def test_parallel_cp_comm_type_reaches_the_cp_attention(monkeypatch, comm_type):
    """parallel.cp_comm_type -> TransformerConfig.cp_comm_type (megatron-core hands it to each layer) -> the exchange."""
    from megatron.core import parallel_state
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.model import sdpa_attention
    from megatron_sota.model.gpt_builder import build_transformer_config

    parallel = ParallelConfig(cp=2, cp_comm_type=comm_type)
    config = build_transformer_config(ModelConfig(num_layers=1), parallel, PrecisionConfig(), "none", "cpu", False)
    assert config.cp_comm_type == comm_type
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    monkeypatch.setattr(parallel_state, "get_context_parallel_group", lambda: "the CP group")
    seen = {}
    monkeypatch.setattr(sdpa_attention, "context_parallel_attention", lambda *args: seen.setdefault("args", args)[0])
    attention = sdpa_attention.SDPACoreAttention(config, 1, AttnMaskType.causal, "self", cp_comm_type=config.cp_comm_type)
    q = torch.zeros(4, 1, config.num_attention_heads, config.kv_channels)
    attention(q, q, q, None)
    assert seen["args"][3:] == ("the CP group", attention.softmax_scale, None, comm_type)
