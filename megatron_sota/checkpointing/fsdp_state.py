"""A Megatron-FSDP or FSDP2 run's weights and optimizer state in the layout-free checkpoint format every other run writes.

Megatron-FSDP keeps each parameter (its fp32 main copy, Adam moments and, with optim_grads_params, its weights) as
row blocks spread over the data-parallel ranks, in data-parallel rank order; megatron-core writes that state only in
its own `fsdp_dtensor` format, which no other layout reads. Here each tensor is gathered over the data-parallel group
into this tensor-parallel rank's whole tensor and described with the model's own ShardedTensors, exactly as the
distributed optimizer's `fully_reshardable` format does (it gathers over data-parallel ranks too), so FSDP and DDP
checkpoints load into each other at any TP, PP and DP. Loading cuts each rank's rows back out. PyTorch FSDP2
(parallel.fsdp_impl=torch) keeps the same row blocks (even Shard(0) DTensors, in rank order) as the model's own
parameters, which megatron-core's plain optimizer steps in place: the same gathering applies, with no main copies apart
from the weights. It must not choose what to save or when (checkpointing/manager.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory
from megatron.core.dist_checkpointing.utils import extract_sharded_tensors_and_factories
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.distributed.torch_fully_sharded_data_parallel import TorchFullyShardedDataParallel
from torch.distributed.tensor import DTensor

# The names megatron-core's fully_reshardable format gives the distributed optimizer's per-parameter state.
_STATE_PREFIX = "optimizer.state"
_ADAM_STATES = ("exp_avg", "exp_avg_sq")
_STATE_KEYS = ("param", *_ADAM_STATES)


def is_fsdp(models) -> bool:
    """Whether the chunks are wrapped in Megatron-FSDP (parallelize/fsdp.py) or FSDP2 (parallelize/torch_fsdp.py)
    rather than DDP."""
    return is_torch_fsdp(models) or any(getattr(getattr(m, "ddp_config", None), "use_megatron_fsdp", False) for m in models)


def is_torch_fsdp(models) -> bool:
    """Whether the chunks are wrapped in FSDP2 (parallel.fsdp_impl=torch)."""
    return any(isinstance(m, TorchFullyShardedDataParallel) for m in models)


def _dp_group():
    return parallel_state.get_data_parallel_group(with_context_parallel=True)


def _sharded(chunk) -> List[Tuple[str, torch.Tensor]]:
    """(name in the GPTModel, the optimizer's DTensor) of each parameter, in Megatron-FSDP's order (FSDP2: the
    model's own DTensor parameters, which the optimizer steps)."""
    if is_torch_fsdp([chunk]):
        return list(_gpt(chunk).named_parameters())
    prefix = _wrapper_prefix(chunk)  # Megatron-FSDP names them from its own module: a Float16Module in bf16/fp16
    return [(name[len(prefix):], d) for name, d in chunk.module.param_and_grad_buffer.optimizer_named_parameters]


def _wrapper_prefix(chunk) -> str:
    """"module." for each wrapper between Megatron-FSDP's module and the GPTModel (Float16Module), else ""."""
    prefix, model = "", chunk.module.module
    while hasattr(model, "module"):
        prefix, model = prefix + "module.", model.module
    return prefix


def parameter(chunk, name: str) -> torch.nn.Parameter:
    """The chunk's parameter `name` as the model built it (its tensor-parallel attributes on it); FSDP2's DTensor
    parameters carry them too (megatron-core's wrapper puts them back)."""
    if is_torch_fsdp([chunk]):
        return _gpt(chunk).get_parameter(name)
    return chunk.module.raw_param[_wrapper_prefix(chunk) + name]


def _row_counts(locals_: List[torch.Tensor]) -> List[List[int]]:
    """Rows each data-parallel rank holds of each tensor: [rank][tensor]."""
    mine = torch.tensor([t.shape[0] for t in locals_], dtype=torch.long)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size(_dp_group()))]
    dist.all_gather(everyone, mine, group=_dp_group())
    return [counts.tolist() for counts in everyone]


def _gather(local: torch.Tensor, rows: List[int]) -> torch.Tensor:
    """This TP rank's whole tensor from each DP rank's rows (`rows`[rank]), joined in rank order."""
    widest = max(rows)
    padded = local.new_zeros((widest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(pieces, padded.contiguous(), group=_dp_group())
    return torch.cat([piece[:count] for piece, count in zip(pieces, rows)])


def _wholes(locals_: List[torch.Tensor], gather: bool) -> Tuple[List[torch.Tensor], List[List[int]]]:
    """This TP rank's whole tensor of each row block (uninitialised unless `gather`), and each tensor's row counts
    per DP rank; collectives over the data-parallel group."""
    counts = _row_counts(locals_)
    rows = [[c[i] for c in counts] for i in range(len(locals_))]
    if gather:
        return [_gather(local, r) for local, r in zip(locals_, rows)], rows
    return [local.new_empty((sum(r), *local.shape[1:])) for local, r in zip(locals_, rows)], rows


def _locals(tensors) -> List[torch.Tensor]:
    return [t.to_local() if hasattr(t, "to_local") else t for t in tensors]


def _gpt(chunk) -> torch.nn.Module:
    model = chunk.module
    while hasattr(model, "module"):
        model = model.module  # Megatron-FSDP's inner module, Float16Module
    return model


@contextlib.contextmanager
def whole_parameters(chunk, weights: Dict[str, torch.Tensor]) -> Iterator[Dict[str, torch.nn.Parameter]]:
    """Puts `weights` in the chunk's GPTModel in place of its parameters (carrying the originals' tensor-parallel
    attributes) and yields them by name, so the model's own sharded_state_dict describes them; the parameters it
    had are put back afterwards."""
    if not is_torch_fsdp([chunk]):
        # Megatron-FSDP puts its sharded parameters back in place whenever a state dict is taken (a state-dict
        # pre-hook) unless they are in place already: put them there first, so that the hook leaves the stand-ins alone.
        chunk.module.synchronize_param_gather()
    gpt = _gpt(chunk)
    before = dict(gpt.named_parameters())
    stand_ins = {}
    try:
        for name, weight in weights.items():
            stand_in = torch.nn.Parameter(weight, requires_grad=False)
            attributes = parameter(chunk, name).__dict__
            stand_in.__dict__.update({k: v for k, v in attributes.items() if not k.startswith("_")})
            _set_parameter(gpt, name, stand_in)
            stand_ins[name] = stand_in
        yield stand_ins
    finally:
        for name, param in before.items():
            _set_parameter(gpt, name, param)


def _set_parameter(root: torch.nn.Module, name: str, value: torch.nn.Parameter) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(owner) if owner else root, leaf, value)


def _in_model_dtype(chunk, wholes: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Name -> weight, from whole tensors that start with the main copies in Megatron-FSDP's order."""
    dtypes = {name: parameter(chunk, name).dtype for name, _ in _sharded(chunk)}
    return {name: whole.to(dtypes[name]) for (name, _), whole in zip(_sharded(chunk), wholes)}


def _sharded_state(chunk, locals_: List[torch.Tensor], is_loading: bool):
    """(the GPTModel's sharded state dict over whole weights, the stand-ins by name, whole tensors of `locals_`):
    `locals_` starts with the main copies' row blocks in Megatron-FSDP's order."""
    wholes, _ = _wholes(locals_, gather=not is_loading)
    with whole_parameters(chunk, _in_model_dtype(chunk, wholes)) as stand_ins:
        state = _gpt(chunk).sharded_state_dict()
    return state, stand_ins, wholes


def whole_weights(chunk) -> Dict[str, torch.Tensor]:
    """Name -> this TP rank's whole weight (model dtype, from the main copies); a collective over the DP group."""
    wholes, _ = _wholes(_locals(d.detach() for _, d in _sharded(chunk)), gather=True)
    return _in_model_dtype(chunk, wholes)


def model_sharded_state_dict(chunk, is_loading: bool) -> Dict[str, Any]:
    """The chunk's sharded state dict as a DDP run's GPTModel gives it, over whole gathered weights
    (over uninitialised ones to load into when `is_loading`)."""
    return _sharded_state(chunk, _locals(d.detach() for _, d in _sharded(chunk)), is_loading)[0]


def _write_rows(locals_: List[torch.Tensor], wholes: List[torch.Tensor], rows: List[List[int]]) -> None:
    rank = dist.get_rank(_dp_group())
    with torch.no_grad():
        for local, whole, r in zip(locals_, wholes, rows):
            start = sum(r[:rank])
            local.copy_(whole[start : start + r[rank]].to(local.dtype))


def _refresh(chunk) -> None:
    """Compute weights from the main copies and, where weights are not sharded, all-gathered: what the
    optimizer does after a step. FSDP2's optimizer steps the weights themselves: nothing to do."""
    if is_torch_fsdp([chunk]):
        return
    chunk.module.install_optimized_model_weights()
    chunk.start_param_sync(force_sync=True)


def load_weights(chunk, loaded: Dict[str, torch.Tensor]) -> None:
    """Writes this rank's rows of the loaded whole weights (a GPTModel state dict) into the chunk."""
    named = _sharded(chunk)
    missing = sorted(name for name, _ in named if name not in loaded)
    if missing:
        raise KeyError(f"the checkpoint has no weights for {missing}")
    locals_ = _locals(d.detach() for _, d in named)
    _, rows = _wholes(locals_, gather=False)
    _write_rows(locals_, [loaded[name] for name, _ in named], rows)
    _refresh(chunk)


# ------------------------------------------------------------------ optimizer
def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    if len(chained) != 1:
        raise NotImplementedError("parallel.fsdp supports one megatron-core optimizer over all chunks")
    return chained[0].optimizer


def steps_dtensors(optimizer) -> bool:
    """Whether a megatron-core optimizer steps DTensor parameters: FSDP2's shards, which fsdp_state saves."""
    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    return any(isinstance(p, DTensor) for o in chained for g in o.optimizer.param_groups for p in g["params"])


def _moments(inner: torch.optim.Optimizer, param) -> List[torch.Tensor]:
    """One parameter's Adam moments; zeros where torch has no state for it (before its first step, or ever where all
    its rows sit on other ranks), without creating any."""
    state = inner.state.get(param)
    return [state[key] if state else torch.zeros_like(param) for key in _ADAM_STATES]


def _optimizer_locals(inner, chunk) -> List[torch.Tensor]:
    """Row blocks of the weights' main copies, then of each Adam moment: all parameters per state key, in
    _STATE_KEYS order, so that tensors[i::n] are parameter i's."""
    named = _sharded(chunk)
    moments = [_moments(inner, dtensor) for _, dtensor in named]
    return _locals([d.detach() for _, d in named] + [m[k] for k in range(len(_ADAM_STATES)) for m in moments])


def _like(base, state_key: str, tensor: torch.Tensor):
    """The optimizer's entry for one state tensor of the parameter `base` describes (fully_reshardable's naming)."""
    changes = dict(key=f"{_STATE_PREFIX}.{state_key}.{base.key}", data=tensor)
    if not isinstance(base, ShardedTensorFactory):
        changes["dtype"] = tensor.dtype
    return dataclasses.replace(base, **changes)


def full_state_dicts(optimizer, chunks, is_loading: bool) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """(each chunk's model sharded state dict, the optimizer's sharded state dict), both in the form a DDP run with
    the distributed optimizer writes (fully_reshardable): per parameter its fp32 main copy ('param') and Adam
    moments in the model's shape under the model's keys, the step in the param groups."""
    inner = _torch_optimizer(optimizer)
    # Parameters whose rows all sit on other ranks get no gradient here, so torch never steps them.
    steps = {float(state["step"]) for state in inner.state.values() if state}
    models, param_state = [], {}
    for chunk in chunks:
        named = _sharded(chunk)
        state, stand_ins, wholes = _sharded_state(chunk, _optimizer_locals(inner, chunk), is_loading)
        models.append(state)
        entries = {id(entry.data): entry for entry in nested_values(extract_sharded_tensors_and_factories(state)[0])}
        for i, (name, _) in enumerate(named):
            base = entries[id(stand_ins[name])]
            param_state[len(param_state)] = {
                key: _like(base, key, tensor) for key, tensor in zip(_STATE_KEYS, wholes[i :: len(named)])
            }
    if len(steps) > 1:
        raise RuntimeError(f"parameters of one optimizer at different steps: {sorted(steps)}")
    step = steps.pop() if steps else 0.0
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "step": step} for g in inner.state_dict()["param_groups"]]
    saved: Dict[str, Any] = {
        "optimizer": {"param_groups": groups},
        "param_state": param_state,
        "param_state_sharding_type": "fully_reshardable",
    }
    if getattr(optimizer, "grad_scaler", None) is not None:
        saved["grad_scaler"] = optimizer.grad_scaler.state_dict()
    return models, saved


def load_optimizer(optimizer, chunks, loaded: Dict[str, Any]) -> None:
    """Writes this rank's rows of the loaded main copies and moments (full_state_dicts' form, from any layout), and
    the step, into the FSDP optimizer; then refreshes the compute weights from the main copies."""
    inner = _torch_optimizer(optimizer)
    steps = {g["step"] for g in loaded["optimizer"]["param_groups"] if g.get("step") is not None}
    if len(steps) > 1:
        raise RuntimeError(f"the checkpoint's param groups are at different steps: {sorted(steps)}")
    step = float(steps.pop()) if steps else 0.0
    index = 0
    for chunk in chunks:
        named = _sharded(chunk)
        every = is_torch_fsdp([chunk])  # FSDP2 gives even an empty shard its (empty) gradient, so torch steps it
        for _, dtensor in named:  # state where a step would have made it, none where it would not
            if step and (every or dtensor.to_local().numel()):
                inner.state[dtensor] = {"step": torch.tensor(step), **{k: torch.zeros_like(dtensor) for k in _ADAM_STATES}}
            else:
                inner.state.pop(dtensor, None)
        locals_ = _optimizer_locals(inner, chunk)
        wholes = [loaded["param_state"][index + i][key] for key in _STATE_KEYS for i in range(len(named))]
        index += len(named)
        _, rows = _wholes(locals_, gather=False)
        _write_rows(locals_, wholes, rows)
        _refresh(chunk)
    if "grad_scaler" in loaded and getattr(optimizer, "grad_scaler", None) is not None:
        optimizer.grad_scaler.load_state_dict(loaded["grad_scaler"])
