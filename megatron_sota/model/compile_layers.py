"""Compiles every transformer layer of built model chunks in place (kernels.compile_layers).

A separate step after building, as torchtitan applies compile: it must not change parameters or state-dict keys.
"""

from __future__ import annotations

from typing import Iterable

import megatron.core.utils as mcore_utils
import torch
from megatron.core import parallel_state

from megatron_sota.runtime.upstream import TP_GROUP_WITHOUT_WARNING, applies

_substituted = False


# megatron-core's RowParallelLinear passes tp_group=None, and get_tensor_model_parallel_group_if_none
# then warns (rank 0 only) that passing it will become mandatory. Dynamo cannot trace warnings.warn,
# and the break falls inside an activation-offloading context manager, so on rank 0 a layer would fall
# apart into about ten small graphs instead of one. This tells Dynamo (and nothing else: eager calls
# still run megatron-core's function) to trace the same lookup without the warning. It repeats
# megatron-core 0.16.1's lookup, so on another version upstream's function is traced instead.
def _default_tp_group_without_warning(tp_group, is_expert=False, check_initialized=True):
    if not torch.distributed.is_initialized():
        return None
    if tp_group is not None or not parallel_state.is_initialized():
        return tp_group
    if is_expert:
        return parallel_state.get_expert_tensor_parallel_group(check_initialized=check_initialized)
    return parallel_state.get_tensor_model_parallel_group(check_initialized=check_initialized)


def _trace_default_tp_group_without_warning() -> None:
    global _substituted
    if _substituted or not applies(TP_GROUP_WITHOUT_WARNING):
        return
    torch.compiler.substitute_in_graph(mcore_utils.get_tensor_model_parallel_group_if_none)(
        _default_tp_group_without_warning
    )
    _substituted = True


def compile_transformer_layers(chunks: Iterable[torch.nn.Module]) -> None:
    """One graph per layer: its norms, RoPE, SwiGLU and residual adds become fused kernels.

    ``Module.compile`` compiles the module's call in place, so the layer keeps its name and the
    checkpoints stay those of the eager model (wrapping it would prefix every key with ``_orig_mod.``).
    Layers of one model share the compiled graph: their parameters are graph inputs.
    """
    _trace_default_tp_group_without_warning()
    for chunk in chunks:
        for layer in chunk.decoder.layers:
            layer.compile()
