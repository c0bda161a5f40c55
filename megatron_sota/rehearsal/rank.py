"""Builds one rank of a training layout as the trainer would, over fake ranks and on the meta device, and weighs it.

The same calls as training/state.py build_training_state (model chunks, DDP wrapping, megatron-core's optimizer, the
checkpoint's sharded state dict) inside runtime/fake_world.py: megatron-core decides every shape, padding and shard,
nothing is allocated. What cannot be rehearsed here: Transformer Engine's layer spec (the local spec is built; its
parameters and buffers are the same, its state-dict keys differ), and anything that needs data.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.machine import Machine, machine_choices
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError

TARGET = Machine(cuda=True, transformer_engine=False)
"""What the rehearsed run is validated and built for: a GPU node; TE cannot be imported here (see the docstring)."""


@dataclass(frozen=True)
class CheckpointShard:
    """One tensor piece this rank writes in a save (the main replica of a ShardedTensor)."""

    key: str
    global_offset: Tuple[int, ...]
    local_shape: Tuple[int, ...]
    flattened_range: Tuple[int, int] | None
    """The distributed optimizer's states: a contiguous range of the flattened local shape."""
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class RankReport:
    rank: int
    world_size: int
    coordinates: Dict[str, int]
    """tp, pp, cp and dp rank of this global rank (megatron-core's order tp-cp-ep-dp-pp)."""
    padded_vocab: int
    chunk_layers: List[Tuple[int, int]]
    """First and last global layer number (1-based) of each model chunk; (0, -1) for a chunk without layers."""
    parameters: int
    weight_bytes: int
    """The module parameters; with the distributed optimizer, its padded parameter buffers (the parameters are views)."""
    gradient_bytes: int
    """megatron-core DDP's main-gradient buffers (fp32, padded)."""
    master_bytes: int
    """fp32 copies of half-precision parameters the optimizer steps (this rank's shard with the distributed optimizer)."""
    optimizer_state_bytes: int
    """Adam's exp_avg and exp_avg_sq as the first step creates them."""
    grad_buffer_numels: List[int]
    param_buffer_numels: List[int]
    checkpoint_shards: List[CheckpointShard]
    save_host_bytes: int
    """Host memory a save gathers on this rank: the fully reshardable format collects the optimizer's fp32
    parameters and moments of every data-parallel rank, unpadded, on each rank before writing (megatron-core
    DistributedOptimizer.get_parameter_state_dp_zero); 0 without the distributed optimizer."""
    build_seconds: float

    @property
    def optimizer_bytes(self) -> int:
        return self.master_bytes + self.optimizer_state_bytes

    @property
    def static_bytes(self) -> int:
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def checkpoint_bytes(self) -> int:
        return sum(s.nbytes for s in self.checkpoint_shards)


def layout_problems(job: JobConfig, world_size: int) -> List[str]:
    """Every problem the real run's config validation reports at this world size (empty when it would start)."""
    try:
        validate_job(job, world_size, TARGET)
    except MegatronSotaError as err:
        return [line.strip()[2:] for line in str(err).splitlines() if line.strip().startswith("- ")] or [str(err)]
    return []


def global_rank(job: JobConfig, world_size: int, *, pp: int = 0, tp: int = 0, cp: int = 0, dp: int = 0) -> int:
    """The global rank at these coordinates: megatron-core orders ranks tp fastest, then cp, dp (ep=1), pp."""
    p = job.parallel
    dp_size = world_size // (p.tp * p.pp * p.cp)
    return tp + p.tp * (cp + p.cp * (dp + dp_size * pp))


def stage_ranks(job: JobConfig, world_size: int) -> List[int]:
    """One global rank per pipeline stage (tp, cp and dp rank 0): what --ranks rehearses."""
    return [global_rank(job, world_size, pp=stage) for stage in range(job.parallel.pp)]


def _checkpoint_shards(state: Dict[str, Any]) -> List[CheckpointShard]:
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories, is_main_replica

    apply_factories(state)  # SwiGLU's fc1 is a factory of two tensors (gate, up)
    shards = []
    for value in nested_values(state):
        if not isinstance(value, ShardedTensor) or not is_main_replica(value.replica_id):
            continue
        rng = value.flattened_range
        numel = (rng.stop - rng.start) if rng is not None else int(torch.Size(value.local_shape).numel())
        shards.append(
            CheckpointShard(
                key=value.key,
                global_offset=tuple(value.global_offset),
                local_shape=tuple(value.local_shape),
                flattened_range=(rng.start, rng.stop) if rng is not None else None,
                dtype=str(value.dtype).replace("torch.", ""),
                nbytes=numel * value.dtype.itemsize,
            )
        )
    return sorted(shards, key=lambda s: (s.key, s.global_offset, s.flattened_range or (0, 0)))


def _master_bytes(optimizer) -> int:
    """fp32 main copies of half-precision parameters: the distributed optimizer's shard of them, or the
    mixed-precision optimizer's whole copies; none for fp32 parameters (stepped in place, or viewed)."""
    total = 0
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        groups = getattr(inner, "shard_fp32_from_float16_groups", None)
        if groups is None:
            groups = getattr(inner, "fp32_from_float16_groups", [])
        total += sum(p.numel() * p.element_size() for group in groups for p in group)
    return total


def _optimizer_state_bytes(optimizer, step: torch.Tensor) -> int:
    """Adam's moments as its first step creates them (meta tensors here); `step` is a real CPU scalar, made before
    the fake world, for the state dict reads its value."""
    from megatron_sota.checkpointing.contents import prime_optimizer_state, torch_optimizers

    prime_optimizer_state(optimizer)
    for inner in torch_optimizers(optimizer):
        for state in inner.state.values():
            state["step"] = step
    return sum(
        tensor.numel() * tensor.element_size()
        for inner in torch_optimizers(optimizer)
        for state in inner.state.values()
        for name, tensor in state.items()
        if name != "step"
    )


def _chunk_layers(chunks) -> List[Tuple[int, int]]:
    from megatron_sota.checkpointing.contents import unwrap

    spans = []
    for chunk in chunks:
        layers = getattr(unwrap(chunk).decoder, "layers", [])
        numbers = [layer.layer_number for layer in layers]
        spans.append((min(numbers), max(numbers)) if numbers else (0, -1))
    return spans


def rehearse_rank(job: JobConfig, world_size: int, rank: int, checkpoint: bool = True) -> RankReport:
    """Builds rank `rank` of `job` at `world_size` GPUs on the meta device and reports what it holds.

    Raises MegatronSotaError listing every layout problem (the real run's messages) when the config would not start.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_sota.checkpointing.contents import build_state_dict
    from megatron_sota.checkpointing.manager import checkpoint_layout
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.model.kernel_choice import KernelChoice
    from megatron_sota.parallelize.ddp import scale_losses_by, wrap_in_ddp
    from megatron_sota.runtime.fake_world import fake_world
    from megatron_sota.training.optimization import build_optimizer, build_scheduler

    problems = layout_problems(job, world_size)
    if problems:
        raise MegatronSotaError("invalid configuration:\n  - " + "\n  - ".join(problems))
    if not 0 <= rank < world_size:
        raise MegatronSotaError(f"--rank {rank} is outside a world of {world_size} ranks")
    if job.parallel.fsdp != "none":
        raise MegatronSotaError(
            f"parallel.fsdp={job.parallel.fsdp}: the rehearsal builds megatron-core DDP layouts only (parallel.fsdp=none); "
            "Megatron-FSDP and FSDP2 check their device meshes against real collectives, which fake ranks cannot answer"
        )
    choices = machine_choices(job, TARGET)
    p, t = job.parallel, job.train
    start = time.perf_counter()
    step = torch.zeros((), device="cpu")
    with fake_world(world_size, rank):
        vpp = p.vpp if p.vpp and p.vpp > 1 else None
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=p.tp, pipeline_model_parallel_size=p.pp,
            virtual_pipeline_model_parallel_size=vpp, context_parallel_size=p.cp,
        )
        try:
            model_parallel_cuda_manual_seed(t.seed)  # the RNG tracker's streams, as the trainer's session adds them
            coordinates = {
                "tp": parallel_state.get_tensor_model_parallel_rank(),
                "pp": parallel_state.get_pipeline_model_parallel_rank(),
                "cp": parallel_state.get_context_parallel_rank(),
                "dp": parallel_state.get_data_parallel_rank(),
            }
            config = build_transformer_config(job.model, p, job.precision, t.recompute, choices.device, False)
            padded = padded_vocab_size(job.model.vocab_size, job.model.make_vocab_size_divisible_by, p.tp)
            chunks = build_model_chunks(job.model, config, padded, t.seq_length, t.seed, False, KernelChoice())
            parameters = sum(param.numel() for chunk in chunks for param in chunk.parameters())
            chunk_layers = _chunk_layers(chunks)
            models = wrap_in_ddp(chunks, config, p, torch.device("meta"))
            optimizer = build_optimizer(job.optimizer, job.scheduler, p, config, job.precision.initial_loss_scale, models)
            scale_losses_by(config, optimizer)
            buffers = [b for m in models for b in getattr(m, "buffers", [])]
            grad_numels = [b.grad_data.numel() for b in buffers]
            param_numels = [b.param_data.numel() for b in buffers if b.param_data is not None]
            gradient_bytes = sum(b.grad_data.numel() * b.grad_data.element_size() for b in buffers)
            if param_numels:
                weight_bytes = sum(b.param_data.numel() * b.param_data.element_size() for b in buffers)
            else:
                weight_bytes = sum(q.numel() * q.element_size() for chunk in chunks for q in chunk.parameters())
            master = _master_bytes(optimizer)
            gathered = 3 * 4 * sum(b.numel_unpadded for b in buffers) if p.distributed_optimizer else 0
            states = _optimizer_state_bytes(optimizer, step)
            shards: List[CheckpointShard] = []
            if checkpoint:
                scheduler = build_scheduler(optimizer, job.optimizer, job.scheduler, t.iters)
                dp = world_size // (p.tp * p.pp * p.cp)
                state = build_state_dict(
                    models, optimizer, scheduler, {"iteration": 0}, "", checkpoint_layout(p, dp),
                    is_loading=False, include_rng=False,
                )
                shards = _checkpoint_shards(state)
        finally:
            parallel_state.destroy_model_parallel()
    return RankReport(
        rank=rank, world_size=world_size, coordinates=coordinates, padded_vocab=padded, chunk_layers=chunk_layers,
        parameters=parameters, weight_bytes=weight_bytes, gradient_bytes=gradient_bytes, master_bytes=master,
        optimizer_state_bytes=states, grad_buffer_numels=grad_numels, param_buffer_numels=param_numels,
        checkpoint_shards=shards, save_host_bytes=gathered, build_seconds=time.perf_counter() - start,
    )


def with_layout(job: JobConfig, **parallel: Any) -> JobConfig:
    """`job` with these parallel settings (tests and the planner's --verify)."""
    return dataclasses.replace(job, parallel=dataclasses.replace(job.parallel, **parallel))
