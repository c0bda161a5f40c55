"""What a checkpoint holds and how it maps onto a training state, as megatron-core sharded state dicts.

Model and optimizer tensors are ShardedTensors keyed by global names, so a checkpoint saved at
one parallel layout loads at another. It must not decide paths or when to save.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from megatron_sota.checkpointing import fsdp_state

FORMAT = "megatron_sota/1"
# The distributed optimizer's state is written per parameter in the model's own shape (gathered
# over data-parallel ranks first), so it reshards across TP, PP and DP like the weights.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The GPTModel inside DDP and the half-precision wrapper."""
    while hasattr(model, "module"):
        model = model.module
    return model


def model_key(index: int, count: int) -> str:
    return "model" if count == 1 else f"model{index}"


def model_sharded_state_dict(models: List[torch.nn.Module], is_loading: bool = False) -> Dict[str, Any]:
    """Each chunk's sharded state dict under its model key; a Megatron-FSDP chunk's in the same (whole-weight) form."""
    if fsdp_state.is_fsdp(models):
        return {model_key(i, len(models)): fsdp_state.model_sharded_state_dict(m, is_loading) for i, m in enumerate(models)}
    return {model_key(i, len(models)): unwrap(m).sharded_state_dict() for i, m in enumerate(models)}


def load_model_state(models: List[torch.nn.Module], loaded: Dict[str, Any]) -> None:
    """Puts loaded weights ({model key: the chunk's state dict}) into the chunks, whichever wrapper they are in."""
    for index, model in enumerate(models):
        chunk_state = loaded[model_key(index, len(models))]
        if fsdp_state.is_fsdp(models):
            fsdp_state.load_weights(model, chunk_state)
        else:
            unwrap(model).load_state_dict(chunk_state, strict=True)


def _rng_payload() -> Dict[str, Any]:
    """Every generator a step can draw from, as tensors and ints only (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    payload = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        payload["cuda"] = torch.cuda.get_rng_state()
    return payload


def restore_rng(payload: Dict[str, Any]) -> None:
    version, internal, gauss = payload["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = payload["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(payload["torch"])
    get_cuda_rng_tracker().set_states(payload["tracker"])
    if "cuda" in payload and torch.cuda.is_available():
        torch.cuda.set_rng_state(payload["cuda"])


def _rng_sharded_object(payload: Optional[Dict[str, Any]]) -> ShardedObject:
    # One entry per (pp, tp) position; data-parallel replicas share it, so only dp rank 0 writes.
    return ShardedObject(
        "rng_state",
        payload,
        (parallel_state.get_pipeline_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_world_size()),
        (parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank()),
        replica_id=parallel_state.get_data_parallel_rank(with_context_parallel=True),
    )


def torch_optimizers(optimizer) -> List[torch.optim.Optimizer]:
    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    return [o.optimizer for o in chained if getattr(o, "optimizer", None) is not None]


def prime_optimizer_state(optimizer) -> None:
    """Gives a never-stepped AdamW zero moments and step 0, the structure a checkpoint loads into.

    megatron-core's distributed optimizer reads the step count from the torch optimizer's state,
    which torch only creates on the first step.
    """
    for inner in torch_optimizers(optimizer):
        for group in inner.param_groups:
            for param in group["params"]:
                state = inner.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param.data)
                    state["exp_avg_sq"] = torch.zeros_like(param.data)


def optimizer_state_to_save(optimizer, model_state: Dict[str, Any]) -> Dict[str, Any]:
    """The optimizer's sharded state dict; before the first real step (an fp16 run whose early steps all
    overflowed), that of step 0 with zero moments, which a resume at step 0 loads.

    Without state, megatron-core's distributed optimizer fails on the step count (`assert len(steps) == 1`)
    and the plain one writes no moments. The zeros exist only while the state dict is built: the live
    optimizer is left as it was, and creates the same zeros at its first step.
    """
    inners = torch_optimizers(optimizer)
    if any(state for inner in inners for state in inner.state.values()):
        return optimizer.sharded_state_dict(model_state, is_loading=False, metadata=OPTIMIZER_METADATA)
    prime_optimizer_state(optimizer)
    try:
        saved = optimizer.sharded_state_dict(model_state, is_loading=False, metadata=OPTIMIZER_METADATA)
    finally:
        for inner in inners:
            inner.state.clear()
    if optimizer_kind(optimizer) == "plain":
        # megatron-core's plain optimizers record the shared step only when it is truthy (`if step:`): without
        # it, torch's Adam refuses the loaded state (KeyError: 'step').
        for torch_state in _torch_state_dicts(saved):
            torch_state["state"].setdefault("common_step", torch.tensor(0.0))
    return saved


def _torch_state_dicts(tree: Any) -> Iterator[Dict[str, Any]]:
    """The torch optimizer state dicts ({'state', 'param_groups'}) inside a plain optimizer's sharded state dict."""
    if isinstance(tree, dict):
        if "state" in tree and "param_groups" in tree:
            yield tree
        else:
            for value in tree.values():
                yield from _torch_state_dicts(value)


def optimizer_kind(optimizer) -> str:
    """'distributed' or 'plain': megatron-core cannot convert optimizer state between the two. FSDP2's (plain)
    optimizer over DTensor shards is saved in the distributed form (checkpointing/fsdp_state.py)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    sharded = any(isinstance(o, DistributedOptimizer) for o in chained) or fsdp_state.steps_dtensors(optimizer)
    return "distributed" if sharded else "plain"


def build_state_dict(
    models, optimizer, scheduler, progress: Dict[str, int], config_yaml: str, layout: Dict[str, int],
    is_loading: bool, include_optimizer: bool = True, include_rng: bool = True, vocab_size: Optional[int] = None,
) -> Dict[str, Any]:
    """The sharded state dict to save (or the template to load into)."""
    fsdp = fsdp_state.is_fsdp(models)
    if include_optimizer and fsdp:
        # Weights and optimizer state gathered together, in the form a DDP run writes (checkpointing/fsdp_state.py).
        chunk_states, optimizer_state = fsdp_state.full_state_dicts(optimizer, models, is_loading)
        state: Dict[str, Any] = {model_key(i, len(models)): s for i, s in enumerate(chunk_states)}
        state["optimizer"] = optimizer_state
    else:
        state = model_sharded_state_dict(models, is_loading)
    if include_optimizer and not fsdp:
        if is_loading:
            prime_optimizer_state(optimizer)
            state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=True, metadata=OPTIMIZER_METADATA)
        else:
            state["optimizer"] = optimizer_state_to_save(optimizer, state)
    if include_optimizer:
        state["scheduler"] = scheduler.state_dict()
    if include_rng:
        state["rng_state"] = _rng_sharded_object(None if is_loading else _rng_payload())
    state["optimizer_kind"] = optimizer_kind(optimizer) if include_optimizer else "none"
    state["progress"] = dict(progress)
    state["format"] = FORMAT
    state["config_yaml"] = config_yaml
    state["layout"] = dict(layout)
    # The tokenizer's vocabulary: exports drop the embedding rows padded beyond it.
    state["vocab_size"] = vocab_size
    return state


def written_tensor_bytes(state: Dict[str, Any]) -> int:
    """Bytes of the tensors this rank writes when saving `state` (the main replica of each shard)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory, is_main_replica

    return sum(
        v.data.numel() * v.data.element_size()
        for v in nested_values(state)
        if isinstance(v, (ShardedTensor, ShardedTensorFactory)) and v.data is not None and is_main_replica(v.replica_id)
    )


def sharded_tensor_shapes(state: Dict[str, Any]) -> Dict[str, tuple]:
    """Global shape of every ShardedTensor key in a (nested) sharded state dict."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    return {v.key: tuple(v.global_shape) for v in nested_values(state) if isinstance(v, ShardedTensor)}
