"""Fixes for two megatron-core 0.16.1 bugs in loading distributed-optimizer checkpoints without apex/TE.

Without apex or Transformer Engine the optimizer is torch's AdamW, which keeps a per-parameter
'step' in its state. Loading the reshardable ("fully_reshardable") optimizer format then copies
every state key of the parameter, 'step' included, from checkpoint tensors that carry no 'step'
(megatron-core restores the step separately), and fails with KeyError: 'step'. The wrapper lets
the copy skip 'step', which megatron-core has already set from the checkpoint's param groups.

Both are declared with the versions they were written for in runtime/upstream.py, whose tests say when
upstream no longer needs them.
"""

from __future__ import annotations

import functools

import torch

from megatron_sota.runtime.upstream import FULLY_RESHARDABLE_STEP, SHARED_ADAM_STEP, applies


def install_fully_reshardable_step_fix() -> None:
    """Idempotent; changes behaviour only where megatron-core would raise KeyError: 'step'."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    if not applies(FULLY_RESHARDABLE_STEP):
        return
    original = DistributedOptimizer._set_main_param_and_optimizer_states
    if getattr(original, "_megatron_sota_fix", False):
        return

    @functools.wraps(original)
    def set_states_without_step(self, model_param, tensors):
        if "step" in tensors or self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            return original(self, model_param, tensors)
        group_index, group_order = self.model_param_group_index_map[model_param]
        state = self.optimizer.state[self.optimizer.param_groups[group_index]["params"][group_order]]
        step = state.pop("step", None)
        try:
            return original(self, model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    set_states_without_step._megatron_sota_fix = True
    DistributedOptimizer._set_main_param_and_optimizer_states = set_states_without_step


def unshare_adam_steps(torch_optimizers) -> None:
    """Gives every parameter its own AdamW step counter after a distributed-optimizer load.

    megatron-core 0.16.1 (without apex/TE) restores one step tensor and assigns that same
    object to every parameter's state; torch's AdamW increments it in place once per parameter,
    so after a resume the bias correction ran ahead by the number of parameters per step.
    """
    applies(SHARED_ADAM_STEP)  # harmless on any version: only says so where it was not written for it
    for inner in torch_optimizers:
        for state in inner.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.detach().clone()
