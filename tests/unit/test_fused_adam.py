"""training.optimization.run_torch_adam_fused: megatron-core's torch AdamW steps with torch's fused kernel, always,
equal to torch's default loop within float32 rounding."""

from __future__ import annotations

import importlib

import pytest
import torch

from megatron_sota.checkpointing.contents import torch_optimizers
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.training.optimization import run_torch_adam_fused


def _megatron_adam(distributed: bool):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.transformer import TransformerConfig

    torch.manual_seed(0)
    module = torch.nn.Linear(16, 8)
    ddp = DistributedDataParallel(TransformerConfig(num_layers=1, hidden_size=16, num_attention_heads=1),
                                  DistributedDataParallelConfig(use_distributed_optimizer=distributed), module)
    config = OptimizerConfig(optimizer="adam", lr=1e-2, weight_decay=0.1, use_distributed_optimizer=distributed)
    return module, ddp, get_megatron_optimizer(config, [ddp])


def _steps(ddp, optimizer, count: int, generator: torch.Generator) -> None:
    for _ in range(count):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        (ddp(torch.randn(4, 16, generator=generator)) ** 2).sum().backward()
        ddp.finish_grad_sync()
        assert optimizer.step()[0]


@pytest.mark.parametrize("distributed", [True, False])
def test_megatron_adam_runs_fused_also_after_a_load(monkeypatch, distributed):
    from megatron_sota.runtime.session import distributed_session

    adam_module = importlib.import_module("torch.optim.adam")
    calls = []
    real = adam_module._fused_adam
    monkeypatch.setattr(adam_module, "_fused_adam", lambda *a, **k: calls.append(1) or real(*a, **k))
    with distributed_session(ParallelConfig(), "cpu", 1, seed=0):
        module, ddp, loop = _megatron_adam(distributed)
        _steps(ddp, loop, 3, torch.Generator().manual_seed(1))
        expected = [p.detach().clone() for p in module.parameters()]
        assert calls == []  # torch's own choice on CPU: the per-parameter loop

        module, ddp, optimizer = _megatron_adam(distributed)
        assert run_torch_adam_fused(optimizer) == 1
        inner = torch_optimizers(optimizer)[0]
        groups = sum(1 for group in inner.param_groups if group["params"])  # one call per group and step
        data = torch.Generator().manual_seed(1)
        _steps(ddp, optimizer, 2, data)
        assert len(calls) == 2 * groups
        # A checkpoint's param groups replace the live ones on load (saved with torch's default here): the next step
        # runs fused still.
        state = inner.state_dict()
        for group in state["param_groups"]:
            group["fused"], group["foreach"] = None, None
        inner.load_state_dict(state)
        _steps(ddp, optimizer, 1, data)
        assert len(calls) == 3 * groups
        got = [p.detach().clone() for p in module.parameters()]
    assert not torch.equal(expected[0], _initial_weight())
    # The same update formula; torch's fused kernel orders a few operations differently.
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _initial_weight() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.nn.Linear(16, 8).weight.detach()
