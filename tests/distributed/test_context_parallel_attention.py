"""The context-parallel attention on real gloo ranks (all-gather forward, reduce backward) equals full attention.

Each rank builds the same full inputs, keeps its load-balanced chunks and returns its output and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from megatron_sota.runtime.local_ranks import run_distributed
from tests.cp_attention_inputs import DOCS, cp_split, inputs, reference

pytestmark = pytest.mark.slow  # a fresh forkserver and 2 or 4 gloo ranks: ~15-25 s on a loaded 2-core machine


def _rank_body(rank: int, cp: int, with_docs: bool) -> dict:
    from megatron_sota.model.context_parallel_attention import context_parallel_attention

    dist.init_process_group("gloo")
    try:
        q, k, v = inputs(24)
        d_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=q.dtype)
        local = [cp_split(t.detach(), cp, rank, 0).requires_grad_() for t in (q, k, v)]
        docs = cp_split(DOCS, cp, rank, 1) if with_docs else None
        out = context_parallel_attention(*local, dist.group.WORLD, 8 ** -0.5, docs)
        out.backward(cp_split(d_out, cp, rank, 0))
        return {"out": out.detach(), "grads": [t.grad for t in local], "d_out": d_out}
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("cp, with_docs", [(2, False), (4, True)])
def test_cp_attention_on_gloo_ranks_equals_full_attention(cp, with_docs):
    results = run_distributed(_rank_body, cp, cp, with_docs)
    q, k, v = inputs(24)
    expected = reference(q, k, v, DOCS if with_docs else None, 8 ** -0.5)
    expected.backward(results[0]["d_out"])
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["out"], cp_split(expected.detach(), cp, rank, 0), rtol=1e-10, atol=1e-12)
        for got, full in zip(result["grads"], (q.grad, k.grad, v.grad)):
            torch.testing.assert_close(got, cp_split(full, cp, rank, 0), rtol=1e-10, atol=1e-12)
