"""The CPU compatibility layer redirects megatron-core's CUDA assumptions, and only while active."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.runtime.cpu_compat import cpu_backend


def test_cuda_placement_lands_on_cpu_and_reports_cuda_type_names():
    with cpu_backend():
        x = torch.zeros(3, device="cuda")
        y = torch.ones(2, device=torch.cuda.current_device())
        z = torch.empty(1, device=torch.device("cuda", 0)).cuda()
        assert {x.device.type, y.device.type, z.device.type} == {"cpu"}
        assert x.type() == "torch.cuda.FloatTensor"
        assert x.to(torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
        assert x.to("cuda").device.type == "cpu"


def test_cuda_rng_calls_drive_the_cpu_generator():
    with cpu_backend():
        torch.cuda.manual_seed(7)
        state = torch.cuda.get_rng_state()
        a = torch.rand(4)
        torch.cuda.set_rng_state(state)
        assert torch.equal(torch.rand(4), a)


def test_everything_is_restored_on_exit():
    original = torch.cuda.current_device
    with cpu_backend():
        assert torch.cuda.current_device is not original
    assert torch.cuda.current_device is original
    assert torch.zeros(1).type() == "torch.FloatTensor"
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(1, device="cuda")
