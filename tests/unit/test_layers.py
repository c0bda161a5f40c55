"""The local-spec kernels compute what they replace: SDPA attention (causal or under an explicit
left-padding mask) and the SP-capable RMSNorm."""

from __future__ import annotations

import math

import pytest
import torch
from megatron.core import parallel_state
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.model.rms_norm import RMSNorm
from megatron_sota.model.sdpa_attention import SDPACoreAttention


def _config(**kwargs) -> TransformerConfig:
    base = dict(num_layers=1, hidden_size=64, num_attention_heads=8, num_query_groups=2, kv_channels=8, attention_dropout=0.0)
    base.update(kwargs)
    return TransformerConfig(**base)


def _naive_causal_gqa(q, k, v):
    """Attention written out by hand on [s, b, heads, d] inputs, keys/values repeated per group."""
    s, b, heads, d = q.shape
    repeat = heads // k.shape[2]
    k = k.repeat_interleave(repeat, dim=2)
    v = v.repeat_interleave(repeat, dim=2)
    scores = torch.einsum("sbhd,tbhd->bhst", q, k) / math.sqrt(d)
    scores = scores.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
    out = torch.einsum("bhst,tbhd->sbhd", scores.softmax(-1), v)
    return out.reshape(s, b, heads * d)


def test_sdpa_core_attention_matches_hand_written_causal_gqa(monkeypatch):
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    attention = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")
    torch.manual_seed(0)
    q, k, v = torch.randn(10, 3, 8, 8), torch.randn(10, 3, 2, 8), torch.randn(10, 3, 2, 8)
    torch.testing.assert_close(attention(q, k, v, None), _naive_causal_gqa(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("new", [1, 3])
def test_sdpa_core_attention_with_cached_keys_attends_like_the_last_rows_of_full_attention(monkeypatch, new):
    """KV-cache steps: queries for the last `new` positions over all 10 keys."""
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    attention = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")
    torch.manual_seed(0)
    q, k, v = torch.randn(10, 3, 8, 8), torch.randn(10, 3, 2, 8), torch.randn(10, 3, 2, 8)
    full = _naive_causal_gqa(q, k, v)
    torch.testing.assert_close(attention(q[-new:], k, v, None), full[-new:], rtol=1e-5, atol=1e-5)


def _naive_masked_gqa(q, k, v, masked):
    """Attention written out by hand under an explicit bool mask [b, 1, q_len, k_len] (True = masked out)."""
    s, b, heads, d = q.shape
    repeat = heads // k.shape[2]
    k = k.repeat_interleave(repeat, dim=2)
    v = v.repeat_interleave(repeat, dim=2)
    scores = torch.einsum("sbhd,tbhd->bhst", q, k) / math.sqrt(d)
    out = torch.einsum("bhst,tbhd->sbhd", scores.masked_fill(masked, float("-inf")).softmax(-1), v)
    return out.reshape(s, b, heads * d)


@pytest.mark.parametrize("offset", [0, 7])
def test_sdpa_core_attention_with_an_explicit_mask_matches_hand_written_masked_gqa(monkeypatch, offset):
    """The mask is complete (no causality added): random left padding over prefill (offset 0) or cached keys."""
    from megatron_sota.inference.checkpoint_model import left_padding_mask

    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    attention = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")
    torch.manual_seed(0)
    q_len = 10 - offset
    q, k, v = torch.randn(q_len, 3, 8, 8), torch.randn(10, 3, 2, 8), torch.randn(10, 3, 2, 8)
    masked = left_padding_mask(torch.tensor([0, 4, 9]), offset, q_len)
    assert masked.shape == (3, 1, q_len, 10) and not masked.all(-1).any()  # every query keeps a key
    out = attention(q, k, v, masked)
    torch.testing.assert_close(out, _naive_masked_gqa(q, k, v, masked), rtol=1e-5, atol=1e-5)
    # A non-causal mask is obeyed as given: attending to everything is not the causal result.
    everything = torch.zeros(1, 1, q_len, 10, dtype=torch.bool)
    torch.testing.assert_close(attention(q, k, v, everything), _naive_masked_gqa(q, k, v, everything), rtol=1e-5, atol=1e-5)


def test_left_padded_rows_attend_like_the_unpadded_rows(monkeypatch):
    """A row padded by p on the left gives, at its real positions, the causal attention of the row alone."""
    from megatron_sota.inference.checkpoint_model import left_padding_mask

    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    attention = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")
    torch.manual_seed(0)
    pads = [0, 3, 8]
    q, k, v = torch.randn(10, 3, 8, 8), torch.randn(10, 3, 2, 8), torch.randn(10, 3, 2, 8)
    out = attention(q, k, v, left_padding_mask(torch.tensor(pads), 0, 10))
    for row, pad in enumerate(pads):
        alone = _naive_causal_gqa(q[pad:, row : row + 1], k[pad:, row : row + 1], v[pad:, row : row + 1])
        torch.testing.assert_close(out[pad:, row : row + 1], alone, rtol=1e-5, atol=1e-5)


def test_sdpa_core_attention_refuses_a_mask_of_the_wrong_shape(monkeypatch):
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    attention = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")
    q, k = torch.randn(4, 1, 8, 8), torch.randn(6, 1, 2, 8)
    with pytest.raises(ValueError, match=r"broadcastable to \[batch, heads, 4, 6\].*found torch.bool of shape \(1, 1, 6, 6\)"):
        attention(q, k, k, torch.zeros(1, 1, 6, 6, dtype=torch.bool))


def test_sdpa_core_attention_refuses_non_causal_masks(monkeypatch):
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    with pytest.raises(ValueError, match="causal"):
        SDPACoreAttention(_config(), 1, AttnMaskType.padding, "self")


def test_rms_norm_matches_torch_and_marks_weight_for_sequence_parallel():
    config = _config(tensor_model_parallel_size=2, sequence_parallel=True)
    norm = RMSNorm(config, 64, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_()
    reference = torch.nn.RMSNorm(64, eps=1e-5)
    reference.weight.data.copy_(norm.weight.data)
    x = torch.randn(5, 2, 64)
    torch.testing.assert_close(norm(x), reference(x))
    assert norm.weight.sequence_parallel is True


@pytest.mark.parametrize("backend", ["math", "flash", "cudnn"])
def test_sdpa_backend_preference_is_in_force_during_the_call_and_computes_the_same(monkeypatch, backend):
    """kernels.attention_backend: the preferred kernel first in SDPA's priority order, the rest as
    fallbacks (cudnn does not exist on CPU: SDPA falls back and still answers)."""
    from torch.nn.attention import SDPBackend

    import megatron_sota.model.sdpa_attention as sdpa_module

    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    seen = []
    real = sdpa_module.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch._C._get_sdp_priority_order()[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(sdpa_module.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    q, k, v = torch.randn(10, 3, 8, 8), torch.randn(10, 3, 2, 8), torch.randn(10, 3, 2, 8)
    default_first = torch._C._get_sdp_priority_order()[0]
    preferred = SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self", backend=backend)
    torch.testing.assert_close(preferred(q, k, v, None), _naive_causal_gqa(q, k, v), rtol=1e-5, atol=1e-5)
    expected = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    assert seen == [int(expected)]
    assert torch._C._get_sdp_priority_order()[0] == default_first  # restored after the call
    SDPACoreAttention(_config(), 1, AttnMaskType.causal, "self")(q, k, v, None)
    assert seen[-1] == default_first  # auto leaves PyTorch's order alone
