"""The context-parallel attention on real gloo ranks equals full attention, with either K/V exchange.

Each rank builds the same full inputs, keeps its load-balanced chunks and returns its output and gradients:
all-gather (forward) and reduction (backward), or the ring (p2p) with dK/dV travelling back to their owners.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from megatron_sota.runtime.local_ranks import run_distributed
from tests.cp_attention_inputs import DOCS, cp_split, inputs, reference

pytestmark = pytest.mark.slow  # a fresh forkserver and 2 or 4 gloo ranks: ~15-25 s on a loaded 2-core machine

COMM_TYPES = ("all_gather", "p2p")
CASES = [(comm, docs, dtype) for comm in COMM_TYPES for docs in (False, True) for dtype in (torch.float64, torch.float32)]


def _rank_body(rank: int, cp: int) -> dict:
    from megatron_sota.model.context_parallel_attention import context_parallel_attention

    dist.init_process_group("gloo")
    try:
        results = {}
        for comm_type, with_docs, dtype in CASES:
            q, k, v = inputs(24)
            d_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=q.dtype)
            local = [cp_split(t.detach(), cp, rank, 0).to(dtype).requires_grad_() for t in (q, k, v)]
            docs = cp_split(DOCS, cp, rank, 1) if with_docs else None
            out = context_parallel_attention(*local, dist.group.WORLD, 8 ** -0.5, docs, comm_type)
            out.backward(cp_split(d_out, cp, rank, 0).to(dtype))
            results[comm_type, with_docs, dtype] = {"out": out.detach(), "grads": [t.grad for t in local], "d_out": d_out}
        return results
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("cp", [2, 4])
def test_cp_attention_on_gloo_ranks_equals_full_attention_with_either_exchange(cp):
    results = run_distributed(_rank_body, cp, cp)
    for with_docs in (False, True):
        q, k, v = inputs(24)
        expected = reference(q, k, v, DOCS if with_docs else None, 8 ** -0.5)
        expected.backward(results[0]["p2p", with_docs, torch.float64]["d_out"])
        for rank, by_case in enumerate(results):
            for comm_type in COMM_TYPES:
                result, case = by_case[comm_type, with_docs, torch.float64], f"{comm_type} docs={with_docs} rank {rank}"
                want = cp_split(expected.detach(), cp, rank, 0)
                torch.testing.assert_close(result["out"], want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{case} out: {m}")
                for name, got, full in zip("qkv", result["grads"], (q.grad, k.grad, v.grad)):
                    want = cp_split(full, cp, rank, 0)
                    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{case} d{name}: {m}")
            # In fp32 the ring sums blocks and dK/dV in another order than the all-gather: equal to rounding.
            ring, gathered = by_case["p2p", with_docs, torch.float32], by_case["all_gather", with_docs, torch.float32]
            for got, want in zip([ring["out"]] + ring["grads"], [gathered["out"]] + gathered["grads"]):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
