"""The CPU compatibility layer redirects megatron-core's CUDA assumptions, and only while active."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.runtime.cpu_compat import _CudaToCpuMode, _cuda_stand_ins, cpu_backend


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


def _active_function_modes() -> list:
    return list(torch.overrides._get_current_function_mode_stack())


def test_everything_is_restored_on_exit():
    # True on CPU-only and GPU machines alike: what is compared is what cpu_backend replaced.
    replaced = list(_cuda_stand_ins())
    originals = {key: getattr(*key, None) for key in replaced}
    modes_before = _active_function_modes()
    with cpu_backend():
        assert [key for key in replaced if getattr(*key, None) is originals[key]] == []
        assert [type(mode) for mode in _active_function_modes()] == [*map(type, modes_before), _CudaToCpuMode]
    assert [key for key in replaced if getattr(*key, None) is not originals[key]] == []
    assert _active_function_modes() == modes_before
    assert torch.zeros(1).type() == "torch.FloatTensor"
    # "cuda" means the GPU again: a CUDA tensor where there is one, an error where there is none.
    if torch.cuda.is_available():
        assert torch.zeros(1, device="cuda").device.type == "cuda"
    else:
        with pytest.raises((RuntimeError, AssertionError)):
            torch.zeros(1, device="cuda")
