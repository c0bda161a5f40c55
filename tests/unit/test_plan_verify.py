"""The planner answers to the rehearsal: for every layout in its top 5 for sota_175b and llama_70b on 1024 H100s,
its static memory terms (weights, main gradients, optimizer) equal, to the byte, what megatron-core builds on the
rank it reports (built on the meta device over fake ranks, megatron_sota/rehearsal/)."""

from __future__ import annotations

import pytest

from megatron_sota.config.presets import load_model_preset
from megatron_sota.planning.cluster import build_cluster
from megatron_sota.planning.search import PlanRequest, search
from megatron_sota.rehearsal.verify import format_checks, verify_layout


@pytest.mark.parametrize("model", ["sota_175b", "llama_70b"])
def test_static_terms_of_the_top_five_layouts_equal_the_rehearsal(model):
    preset = load_model_preset(model)
    seq = preset.max_position_embeddings
    request = PlanRequest(model=preset, cluster=build_cluster("h100-80gb", 8, 128), seq_length=seq, global_batch_size=2**24 // seq)
    layouts = [plan.layout for plan in search(request).plans[:5]]
    assert len(layouts) == 5
    checks = [verify_layout(request, layout, activations=False) for layout in layouts]
    for check in checks:
        assert [t.term for t in check.terms] == ["weights", "gradients", "optimizer"]
        assert all(t.rehearsal > 0 for t in check.terms)
    assert all(check.ok for check in checks), format_checks(checks)
