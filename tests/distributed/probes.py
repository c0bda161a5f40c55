"""Bodies of the multi-rank tests: build a real training state, run steps, gather full tensors.

Everything returned is layout-free (full, un-sharded tensors under global parameter names), so
a TP=2 or PP=2 run can be compared with a single-process one entry by entry.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Dict, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_sota.checkpointing import fsdp_state
from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
from megatron_sota.config.job import JobConfig
from megatron_sota.runtime.launch_env import read_launch_env
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.state import build_training_state, check_inputs
from megatron_sota.training.step import forward_backward, train_step


def _unshard(shards, dim: int, stride: int) -> torch.Tensor:
    """Inverse of megatron-core's strided TP split (stride 2 = fused [gate, up] per rank)."""
    if stride == 1:
        return torch.cat(shards, dim)
    pieces = [shard.chunk(stride, dim) for shard in shards]
    return torch.cat([pieces[r][k] for k in range(stride) for r in range(len(shards))], dim)


def _global_name(gpt_model, name: str) -> str:
    match = re.match(r"decoder\.layers\.(\d+)\.(.*)", name)
    if not match:
        return name
    layer = gpt_model.decoder.layers[int(match.group(1))]
    return f"decoder.layers.{layer.layer_number - 1}.{match.group(2)}"


def gather_full(models, kind: str) -> Optional[Dict[str, torch.Tensor]]:
    """Full tensors of every parameter ('param') or its gradient ('grad') on rank 0, else None."""
    tp_group = parallel_state.get_tensor_model_parallel_group()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    local: Dict[str, torch.Tensor] = {}
    fsdp = fsdp_state.is_fsdp(models)
    if fsdp and kind != "param":
        raise ValueError("Megatron-FSDP keeps only each rank's share of a gradient: compare weights")
    for ddp in models:
        gpt = unwrap(ddp)
        if fsdp:  # the weights gathered over DP ranks, with the tensor-parallel attributes of the originals
            items = [(name, fsdp_state.parameter(ddp, name), whole) for name, whole in fsdp_state.whole_weights(ddp).items()]
        else:
            items = [(name, p, p.main_grad if kind == "grad" else p.data) for name, p in gpt.named_parameters()]
        for name, param, value in items:
            value = value.detach().float().clone()
            if getattr(param, "tensor_model_parallel", False) and tp_size > 1:
                shards = [torch.empty_like(value) for _ in range(tp_size)]
                dist.all_gather(shards, value, group=tp_group)
                value = _unshard(shards, param.partition_dim, param.partition_stride)
            local[_global_name(gpt, name)] = value
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    if dist.get_rank() != 0:
        return None
    merged: Dict[str, torch.Tensor] = {}
    for part in gathered:
        merged.update(part)
    return merged


@contextlib.contextmanager
def fresh_training_state(job: JobConfig, run_dir: str, load_from: Optional[str] = None, objective=None):
    """This rank's training state inside a CPU session, with data from the first sample
    (or loaded from a checkpoint directory, data untouched); `objective` (training/objective.py) prepared,
    built in and given its before_first_step as the trainer does (training/trainer.py), pretraining when None."""
    env = read_launch_env()
    inputs = check_inputs(job, env.world_size)
    if objective is not None:
        job = objective.prepare(job, inputs)
    with distributed_session(job.parallel, "cpu", 5, job.train.seed, env) as session:
        state = build_training_state(job, inputs, session, run_dir, objective=objective)
        if load_from is None:
            progress = Progress()
            state.start_data(0)
        else:
            manager = CheckpointManager(job.checkpoint, os.path.join(run_dir, "unused_checkpoints"))
            progress = manager.load(state, load_from, checkpoint_layout(job.parallel, state.layout.dp))
        state.objective.before_first_step(state, progress)
        yield state


def layout_probe(rank: int, job: JobConfig, run_dir: str, steps: int, objective=None) -> dict:
    """Gradients of the first global batch, then the losses of `steps` optimizer steps and the final weights;
    of `objective`'s loss when given (fresh_training_state)."""
    t = job.train
    with fresh_training_state(job, run_dir, objective=objective) as state:
        session = state.session
        step = state.objective.forward_step(state)
        args = (state.layout.num_microbatches, t.micro_batch_size * state.objective.rows_per_sample, t.seq_length)
        for model in state.models:
            model.zero_grad_buffer()
        first_loss, _ = forward_backward(state.models, state.train_iterators, *args, False, session.device, step)
        # With data (or context) parallelism the distributed optimizer leaves each rank only its shard
        # of the reduced gradient; full gradients are compared for dp=cp=1 layouts or without it.
        # FSDP keeps only shards of it in either case.
        full_grads = state.layout.dp * job.parallel.cp == 1 or not job.parallel.distributed_optimizer
        full_grads = full_grads and not fsdp_state.is_fsdp(state.models)
        grads = gather_full(state.models, "grad") if full_grads else None
        results = [
            train_step(
                state.models, state.optimizer, state.scheduler, state.train_iterators, *args, session.device,
                forward_step=step,
            )
            for _ in range(steps)
        ]
        params = gather_full(state.models, "param")
        held = training_state_bytes(state.models, state.optimizer)
        return {
            "first_loss": first_loss, "grads": grads, "losses": [r.loss for r in results],
            # Adam all but ignores a gradient's scale, and clipping hides it further: the norms show it.
            "grad_norms": [r.grad_norm for r in results], "params": params, "bytes": held,
        }


def step_stats_probe(rank: int, job: JobConfig, run_dir: str, steps: int, until_update: bool = False) -> list[dict]:
    """Loss, gradient norm, skip flag and loss scale of each of `steps` optimizer steps; with `until_update`, of
    those up to and including the first step that is not skipped."""
    t = job.train
    with fresh_training_state(job, run_dir) as state:
        args = (state.layout.num_microbatches, t.micro_batch_size, t.seq_length, state.session.device)
        stats = []
        for _ in range(steps):
            result = train_step(state.models, state.optimizer, state.scheduler, state.train_iterators, *args)
            stats.append(
                {
                    "loss": result.loss,
                    "grad_norm": result.grad_norm,
                    "skipped": result.skipped,
                    "loss_scale": float(state.optimizer.get_loss_scale().item()),
                }
            )
            if until_update and not result.skipped:
                break
        return stats


def pretrain_probe(rank: int, job: JobConfig, run_dir: str, faults: str = "") -> dict:
    """A whole run through the trainer (resume, saves, stops included), with optional fault hooks."""
    from megatron_sota.training.fault_injection import ENV_VAR
    from megatron_sota.training.trainer import pretrain

    os.environ[ENV_VAR] = faults
    summary = pretrain(job, run_dir)
    return {
        "losses": summary.losses,
        "first_step": summary.first_step,
        "val_losses": summary.val_losses,
        "exit_code": summary.exit_code,
    }


def validation_probe(rank: int, job: JobConfig, run_dir: str, checkpoint_dir: str) -> float:
    """Validation loss of a checkpoint loaded at this job's layout (no training)."""
    from megatron_sota.training.callbacks.validation import validation_loss

    with fresh_training_state(job, run_dir, load_from=checkpoint_dir) as state:
        return validation_loss(state)


def training_state_bytes(models, optimizer) -> Dict[str, int]:
    """Bytes this rank holds for weights, gradients and optimizer (main copies, moments), counting each storage once,
    in that order of claim: what parameter, gradient and optimizer sharding change. DDP's weights and gradient
    buffers, Megatron-FSDP's model-weight, main-weight and main-gradient buffers, and the optimizer's state."""
    seen: set = set()

    def claim(tensors) -> int:
        total = 0
        for tensor in tensors:
            if tensor is None:
                continue
            local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            storage = local.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    def fsdp_buffers(attribute: str):
        return [
            getattr(getattr(group, attribute), "data", None)
            for m in models if fsdp_state.is_fsdp([m])
            for group in m.module.param_and_grad_buffer.parameter_groups if getattr(group, attribute) is not None
        ]

    inner = [o.optimizer for o in getattr(optimizer, "chained_optimizers", [optimizer])]
    states = [t for o in inner for s in o.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    main = [p for o in inner for g in o.param_groups for p in g["params"]]
    if fsdp_state.is_fsdp(models) and not fsdp_state.is_torch_fsdp(models):
        # the module's parameters are views of these buffers, or the optimizer's main copies
        held = {
            "weights": claim(fsdp_buffers("model_weight_buffer")),
            "grads": claim(fsdp_buffers("main_grad_buffer")),
            "optimizer": claim(main + fsdp_buffers("main_weight_buffer") + states),
        }
    else:
        params = [p for m in models for p in unwrap(m).parameters()]
        held = {
            "weights": claim(params),
            "grads": claim([getattr(p, "main_grad", p.grad) for p in params]),  # FSDP2: grad, a DTensor shard
            "optimizer": claim(main + states),
        }
    # Anything else the module's parameters still point at (Megatron-FSDP's gathered units not yet released).
    held["other"] = claim([p for m in models for p in unwrap(m).parameters()])
    return held
