"""The CUDA fused block kernels, without a GPU: their op calls on meta tensors, the kernel choice, and their GQA
expansion, lse slicing and dtype handling with the CUDA ops replaced by torch's CPU flash attention."""

from __future__ import annotations

import types

import pytest
import torch

from megatron_sota.model import context_parallel_attention as cpa
from megatron_sota.model import fused_attention_block as fab
from megatron_sota.model.context_parallel_attention import _heads_first, _seq_first, attend_backward, attend_forward
from tests.cp_attention_inputs import cp_split, in_rank_order, inputs, reference

KERNELS = {"flash": fab.FLASH, "efficient": fab.EFFICIENT}


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("causal", [True, False], ids=["diagonal", "earlier_chunk"])
def test_cuda_kernels_call_the_aten_ops_with_the_arguments_and_returns_they_have(name, causal):
    """Meta kernels check arguments and give each output's shape: a changed signature or return arity fails here."""
    b, heads, kv_heads, s_q, d = 2, 8, 2, 40, 64
    s_k = s_q if causal else 72
    make = lambda h, s: torch.empty(b, h, s, d, dtype=torch.bfloat16, device="meta")  # noqa: E731
    q, k, v = make(heads, s_q), make(kv_heads, s_k), make(kv_heads, s_k)
    kernel = KERNELS[name]
    out, lse = kernel.forward(q, k, v, causal, 0.125)
    assert (out.shape, out.dtype, lse.shape, lse.dtype) == (q.shape, q.dtype, (b, heads, s_q), torch.float32)
    dq, dk, dv = kernel.backward(q, q, k, v, out.float(), lse, causal, 0.125)
    assert (dq.shape, dq.dtype) == (q.shape, q.dtype)
    assert [(t.shape, t.dtype) for t in (dk, dv)] == [((b, kv_heads, s_k, d), torch.float32)] * 2


@pytest.mark.parametrize(
    "dtype, flash, efficient, chosen",
    [
        (torch.bfloat16, True, True, "flash"),
        (torch.float16, False, True, "efficient"),  # e.g. a head dim flash does not take
        (torch.float32, True, True, "efficient"),  # flash has no fp32
        (torch.float32, True, False, None),
    ],
)
def test_cuda_kernel_is_flash_for_half_precision_else_efficient_else_none(monkeypatch, dtype, flash, efficient, chosen):
    monkeypatch.setattr(torch.backends.cuda, "can_use_flash_attention", lambda params: flash)
    monkeypatch.setattr(torch.backends.cuda, "can_use_efficient_attention", lambda params: efficient)
    fab._cuda_kernel.cache_clear()
    try:  # the meta device stands in for CUDA: only the probe tensors are made on it
        kernel = fab._cuda_kernel(torch.device("meta"), dtype, 8, 64)
    finally:
        fab._cuda_kernel.cache_clear()
    assert kernel is (None if chosen is None else KERNELS[chosen])


@pytest.fixture
def cuda_ops_on_cpu(monkeypatch):
    """The four CUDA ops replaced by torch's CPU flash attention, which takes grouped heads natively; the efficient
    forward pads its lse rows with NaN as far as the CUDA kernel pads them, so an unsliced lse spoils the result."""
    aten, calls, ops = torch.ops.aten, [], types.SimpleNamespace()
    cpu, cpu_backward = aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward

    def flash(q, k, v, dropout_p, causal, debug_mask, scale):
        calls.append((k.size(1), q.dtype))
        return cpu.default(q, k, v, dropout_p, causal, scale=scale) + (None,) * 7

    def flash_backward(d_out, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, dropout_p, causal, seed, offset, scale):
        assert (cum_q, cum_k, max_q, max_k, out.dtype) == (None, None, q.size(2), k.size(2), q.dtype)
        return cpu_backward.default(d_out, q, k, v, out, lse, dropout_p, causal, scale=scale)

    def efficient(q, k, v, bias, with_lse, dropout_p, causal, scale):
        calls.append((k.size(1), q.dtype))
        out, lse = cpu.default(q, k, v, dropout_p, causal, scale=scale)
        return out, torch.nn.functional.pad(lse, (0, -lse.size(-1) % 32), value=float("nan")), None, None

    def efficient_backward(d_out, q, k, v, bias, out, lse, seed, offset, dropout_p, grad_mask, causal, scale):
        assert lse.size(-1) % 32 == 0 and out.dtype == q.dtype
        grads = cpu_backward.default(d_out, q, k, v, out, lse[..., : q.size(2)], dropout_p, causal, scale=scale)
        return grads + (None,)

    for name, fake in [
        ("_scaled_dot_product_flash_attention", flash), ("_scaled_dot_product_flash_attention_backward", flash_backward),
        ("_scaled_dot_product_efficient_attention", efficient),
        ("_scaled_dot_product_efficient_attention_backward", efficient_backward),
    ]:
        setattr(ops, name, types.SimpleNamespace(default=lambda *a, fake=fake, scale: fake(*a, scale)))
    monkeypatch.setattr(fab, "CUDA_OPS", ops)
    return calls


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.bfloat16, 2e-2)], ids=["fp64", "bf16"])
def test_cuda_kernels_expand_grouped_heads_and_sum_their_gradients(name, dtype, tol, cuda_ops_on_cpu, monkeypatch):
    cp, seq, heads, kv_heads, dim = 2, 40, 6, 2, 8
    monkeypatch.setattr(cpa, "fused_block_kernel", lambda *chosen_by: KERNELS[name])
    q, k, v = inputs(seq, heads=heads, kv_heads=kv_heads, dim=dim)
    scale = dim ** -0.5
    expected = reference(q, k, v, None, scale)
    d_out = torch.randn_like(expected)
    expected.backward(d_out)
    k_all, v_all = (in_rank_order(t.detach(), cp, 0).permute(1, 2, 0, 3).to(dtype) for t in (k, v))
    dk_sum = dv_sum = 0
    for rank in range(cp):
        q_local, d_local = (_heads_first(cp_split(t.detach(), cp, rank, 0), kv_heads).to(dtype) for t in (q, d_out))
        out, lse = attend_forward(q_local, k_all, v_all, rank, cp, scale)
        assert out.dtype == lse.dtype == torch.promote_types(dtype, torch.float32)  # merged in fp32 at least
        dq, dk, dv = attend_backward(d_local, q_local, k_all, v_all, out, lse, rank, cp, scale)
        check = lambda got, want: torch.testing.assert_close(got, want.to(got.dtype), rtol=tol, atol=tol)  # noqa: E731
        check(_seq_first(out), cp_split(expected.detach(), cp, rank, 0))
        check(_seq_first(dq), cp_split(q.grad, cp, rank, 0))
        dk_sum, dv_sum = dk_sum + dk, dv_sum + dv
    check(dk_sum, in_rank_order(k.grad, cp, 0).permute(1, 2, 0, 3))
    check(dv_sum, in_rank_order(v.grad, cp, 0).permute(1, 2, 0, 3))
    assert set(cuda_ops_on_cpu) == {(heads, dtype)}  # K/V expanded to the query heads, inputs in their own dtype
