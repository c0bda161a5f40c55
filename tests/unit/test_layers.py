"""The local-spec kernels compute what they replace: SDPA attention and the SP-capable RMSNorm."""

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


def test_fp8_without_transformer_engine_is_a_clear_error():
    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.model.gpt_builder import build_transformer_config

    with pytest.raises(MegatronSotaError, match="precision.fp8=hybrid needs Transformer Engine"):
        build_transformer_config(
            ModelConfig(), ParallelConfig(), PrecisionConfig(dtype="bf16", fp8="hybrid"), "none", "cpu", use_te=False
        )


def test_context_parallel_without_transformer_engine_is_a_clear_error():
    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.model.gpt_builder import build_transformer_config

    with pytest.raises(MegatronSotaError, match="parallel.cp=2 needs Transformer Engine"):
        build_transformer_config(ModelConfig(), ParallelConfig(cp=2), PrecisionConfig(), "none", "cpu", use_te=False)
