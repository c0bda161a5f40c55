"""runtime/fake_world.py: one rank of a large world in this process, on the meta device, and nothing left behind."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from megatron_sota.runtime.fake_world import fake_world


def test_rank_of_a_large_world_places_everything_on_meta_and_restores_the_process():
    from megatron.core import parallel_state

    current_device = torch.cuda.current_device
    with fake_world(1024, 1023):
        assert (dist.get_rank(), dist.get_world_size()) == (1023, 1024)
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=4, pipeline_model_parallel_size=8)
        try:
            assert parallel_state.get_tensor_model_parallel_rank() == 3
            assert parallel_state.get_pipeline_model_parallel_rank() == 7
            assert parallel_state.get_data_parallel_world_size() == 32
        finally:
            parallel_state.destroy_model_parallel()
        made = [torch.empty(3), torch.zeros(2, device="cuda"), torch.ones(2, device="cpu"), torch.empty(1).cuda()]
        assert {t.device.type for t in made} == {"meta"}
    assert not dist.is_initialized()
    assert torch.cuda.current_device is current_device
    assert torch.empty(1).device.type == "cpu"


def test_cpu_placement_keeps_real_tensors_and_refuses_a_rank_outside_the_world():
    with fake_world(8, 0, device="cpu"):
        assert torch.ones(2, device="cuda").sum().item() == 2.0
    with pytest.raises(ValueError, match="outside a world of 8"):
        with fake_world(8, 8):
            pass
    assert not dist.is_initialized()
