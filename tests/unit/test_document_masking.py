"""Packed rows with data.reset_attention_mask: attention within each document equals the documents run
alone, in the core attention (forward and backward) and through a whole GPTModel."""

from __future__ import annotations

import math

import pytest
import torch
from megatron.core import parallel_state
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.model.document_attention import document_ids, plan_documents
from megatron_sota.model.sdpa_attention import SDPACoreAttention

EOD = 99


def _ids(*rows) -> torch.Tensor:
    """Document ids of rows given as lists of document lengths."""
    return torch.stack([torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)]) for lengths in rows])


def test_a_document_starts_after_each_eod_which_ends_the_one_before():
    tokens = torch.tensor([[5, EOD, 7, 8, EOD, EOD, 3], [EOD, 1, 2, 3, 4, 5, 6]])
    assert document_ids(tokens, EOD).tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1, 1]]


def test_the_plan_gathers_under_twice_the_tokens_in_at_most_log2_seq_plus_one_attention_calls():
    seq = 256
    lengths = [1, 1, 2, 3, 5, 9, 17, 33, 65, 120]
    plan = plan_documents(_ids(lengths, [seq], [1] * seq))
    assert sum(lengths) == seq
    assert plan.buffer_rows < 2 * 3 * seq and len(plan.groups) <= math.log2(seq) + 1
    assert sorted(plan.slots.tolist()) == sorted(set(plan.slots.tolist()))  # one slot per token
    assert not plan.one_per_row and plan_documents(_ids([seq], [seq])).one_per_row


def _attention(monkeypatch) -> SDPACoreAttention:
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 1)
    config = TransformerConfig(
        num_layers=1, hidden_size=64, num_attention_heads=8, num_query_groups=2, kv_channels=8, attention_dropout=0.0
    )
    return SDPACoreAttention(config, 1, AttnMaskType.causal, "self")


def _each_document_alone(attention, q, k, v, ids) -> torch.Tensor:
    """Plain causal attention (no ids) over every document's own rows, put back in place."""
    rows = []
    for b in range(ids.size(0)):
        spans = torch.unique_consecutive(ids[b], return_counts=True)[1].tolist()
        parts, start = [], 0
        for length in spans:
            piece = slice(start, start + length)
            parts.append(attention(q[piece, b : b + 1], k[piece, b : b + 1], v[piece, b : b + 1], None))
            start += length
        rows.append(torch.cat(parts))
    return torch.cat(rows, dim=1)


@pytest.mark.parametrize(
    "rows",
    [
        ([5, 1, 6], [12], [1, 1, 2, 4, 3, 1]),  # length-1 documents, a row of one document, mixed lengths
        ([1] * 12, [11, 1], [2, 10]),
    ],
)
def test_document_ids_attend_like_each_document_run_alone_forward_and_backward(monkeypatch, rows):
    attention = _attention(monkeypatch)
    ids = _ids(*rows)
    torch.manual_seed(0)
    q, k, v = (torch.randn(12, len(rows), heads, 8, requires_grad=True) for heads in (8, 2, 2))
    grad_out = torch.randn(12, len(rows), 64)
    packed = attention(q, k, v, ids)
    packed_grads = torch.autograd.grad(packed, (q, k, v), grad_out)
    alone = _each_document_alone(attention, q, k, v, ids)
    alone_grads = torch.autograd.grad(alone, (q, k, v), grad_out)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-6)
    for name, got, expected in zip("qkv", packed_grads, alone_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"d{name}: {m}")
    # Causal attention over the whole row is not that (the comparison can fail).
    assert not torch.allclose(attention(q, k, v, None), alone, atol=1e-3)


def test_document_ids_over_cached_keys_are_refused(monkeypatch):
    """Generation keeps bool masks; ids make sense only when queries and keys are the same tokens."""
    attention = _attention(monkeypatch)
    q, k, v = torch.randn(2, 1, 8, 8), torch.randn(6, 1, 2, 8), torch.randn(6, 1, 2, 8)
    with pytest.raises(ValueError, match="over as many keys as queries"):
        attention(q, k, v, torch.zeros(1, 2, dtype=torch.long))


VOCAB, SEQ = 128, 24


def test_a_packed_row_gives_each_token_the_loss_of_its_document_run_alone():
    """A tiny GPTModel: per-token losses of three packed documents (one of a lone eod) against each run by itself."""
    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config
    from megatron_sota.model.kernel_choice import KernelChoice
    from megatron_sota.runtime.session import distributed_session

    model_config, parallel = ModelConfig(num_layers=2), ParallelConfig()
    generator = torch.Generator().manual_seed(0)
    lengths = [9, 1, 14]
    documents = [torch.cat([torch.randint(0, EOD, (n - 1,), generator=generator), torch.tensor([EOD])]) for n in lengths]
    tokens = torch.cat(documents)[None]
    labels = torch.randint(0, VOCAB, (1, SEQ), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]  # data.reset_position_ids
    with distributed_session(parallel, "cpu", 1, seed=0):
        config = build_transformer_config(model_config, parallel, PrecisionConfig(), "none", "cpu", False, KernelChoice())
        (model,) = build_model_chunks(model_config, config, VOCAB, SEQ, 0, False, KernelChoice())
        model.eval()
        with torch.no_grad():
            packed = model(tokens, positions, document_ids(tokens, EOD), labels=labels)[0]
            whole_row = model(tokens, positions, None, labels=labels)[0]
            alone, start = [], 0
            for n in lengths:
                span = slice(start, start + n)
                alone.append(model(tokens[:, span], torch.arange(n)[None], None, labels=labels[:, span])[0])
                start += n
    alone = torch.cat(alone)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    # Without ids the later documents see the earlier ones: their losses differ.
    assert not torch.allclose(whole_row[lengths[0]:], alone[lengths[0]:], atol=1e-3)
