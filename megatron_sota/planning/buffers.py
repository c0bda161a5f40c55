"""What megatron-core's DDP and optimizer allocate on one rank, element for element, from the config alone.

The planner's static memory terms (memory.py, fsdp=none) come from here, so they equal what the
trainer builds (parallelize/ddp.py, training/optimization.py) on megatron-core 0.16.1:

- Each model chunk gets its own DistributedDataParallel with one _ParamAndGradBuffer per dtype
  (a single one here: every parameter has params_dtype, every gradient is fp32 since
  grad_reduce_in_fp32=True). Parameters enter the buffer in reverse registration order.
- With the distributed optimizer, each parameter starts at a multiple of 64 elements and each bucket
  ends at a multiple of lcm(N, 128), N = dp*cp (the buffer's data-parallel group); the tied
  embedding/output weight of a pipelined model gets a bucket of its own. The buffer then also holds
  the parameters themselves (param_data, params_dtype): the module's weights become views into it.
  Without it nothing is padded and the weights stay the module's own tensors.
- Buckets: one per buffer unless overlap_grad_reduce is on, and then only on pipeline rank 0's first
  chunk (later chunks pass disable_bucketing, later ranks never bucket): a bucket closes once it
  reaches max(4e7, 1e6 * N) elements.
- The distributed optimizer gives data-parallel rank k the k-th of N equal contiguous slices of every
  bucket; it keeps an fp32 master copy (bf16 params only) and Adam's exp_avg and exp_avg_sq of the
  parameter elements in its slices, not of the padding. Padding sits at bucket ends (and between
  parameters whose size is not a multiple of 64), so the last ranks' slices hold fewer elements.
  Without it every rank keeps master copy and Adam states of every parameter.

Adam's states count as allocated although torch creates them at the first step. Parameter shapes
and their order come from model/param_count.py's chunk_parameters (megatron-core's local layer
spec, checked against real builds). Transformer Engine's spec holds the same shapes with each norm
weight inside the linear it feeds, a different order; that changes nothing unless some size is not
a multiple of 64 (none in conf/model/: then only the parameters' 64-element alignment moves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np

from megatron_sota.config.model import ModelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.param_count import ParamShape, chunk_parameters
from megatron_sota.planning.layout import ParallelLayout

GRAD_BYTES = 4
"""megatron-core DDP main grads: grad_reduce_in_fp32=True (parallelize/ddp.py)."""
ADAM_BYTES = 8
"""exp_avg and exp_avg_sq, fp32."""
MASTER_BYTES = 4
"""fp32 master copy of bf16 parameters (none for fp32 parameters: the optimizer steps them in place)."""

PARAM_ALIGNMENT = 64
"""Elements: each parameter's start in a distributed-optimizer buffer (128-byte addresses)."""
BUCKET_ALIGNMENT = 128
"""Elements: each bucket's end is a multiple of lcm(dp*cp, this) under the distributed optimizer."""


@dataclass(frozen=True)
class ChunkBuffer:
    """One model chunk's _ParamAndGradBuffer: where its parameters and buckets sit."""

    numel: int
    """Elements of grad_data (and of param_data with the distributed optimizer), padding included."""
    params: Tuple[Tuple[int, int], ...]
    """[start, end) of each parameter in the buffer, in buffer order (reverse registration)."""
    buckets: Tuple[Tuple[int, int], ...]
    """[start, end) of each bucket, padded ends included."""

    @property
    def numel_unpadded(self) -> int:
        return sum(end - start for start, end in self.params)


@dataclass(frozen=True)
class RankBuffers:
    """What one (pipeline rank, data-parallel rank) holds for its model state; any TP rank holds the same."""

    pipeline_rank: int
    dp_rank: int
    """Rank in the dp*cp group the buffers are sharded over."""
    parameters: int
    """Parameter elements of the rank's chunks (exact, no padding)."""
    grad_buffer_numels: Tuple[int, ...]
    """Elements of each chunk's grad_data (padded)."""
    bucket_numels: Tuple[Tuple[int, ...], ...]
    """Elements of each bucket of each chunk's buffer (padded)."""
    param_buffer_numels: Tuple[int, ...]
    """Elements of each chunk's param_data; 0 without the distributed optimizer."""
    optimizer_elements: int
    """Parameter elements this rank's optimizer steps (its slices' share, or all of them)."""
    weights: int
    """Bytes: the param buffers with the distributed optimizer (the weights are views into them), else the parameters."""
    gradients: int
    """Bytes of the fp32 grad buffers."""
    optimizer_states: int
    """Bytes of Adam's exp_avg and exp_avg_sq."""
    master: int
    """Bytes of the fp32 master copy (0 for fp32 parameters)."""

    @property
    def optimizer(self) -> int:
        return self.optimizer_states + self.master

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def chunk_buffer(
    params: List[ParamShape], data_parallel_size: int, distributed_optimizer: bool, bucket_size: Optional[int]
) -> ChunkBuffer:
    """The layout _ParamAndGradBuffer.__init__ gives these parameters (module docstring)."""
    bucket_divisor = math.lcm(data_parallel_size, BUCKET_ALIGNMENT)
    ranges: List[Tuple[int, int]] = []
    buckets: List[Tuple[int, int]] = []
    bucket_start = start = end = 0
    in_bucket = 0

    def close(at: int) -> int:
        nonlocal bucket_start, in_bucket
        padded = _pad(at, bucket_divisor) if distributed_optimizer else at
        buckets.append((bucket_start, padded))
        bucket_start, in_bucket = padded, 0
        return padded

    for param in reversed(params):
        if distributed_optimizer:
            start = _pad(start, PARAM_ALIGNMENT)
        own_bucket = param.shared_embedding and distributed_optimizer
        if own_bucket and in_bucket:
            start = close(start)
        end = start + param.numel
        ranges.append((start, end))
        in_bucket += 1
        if (bucket_size is not None and end - bucket_start >= bucket_size) or own_bucket:
            start = close(end)
        else:
            start = end
    if in_bucket:
        close(end)
    numel = buckets[-1][1] if buckets else 0
    return ChunkBuffer(numel, tuple(ranges), tuple(buckets))


def shard_elements(buffer: ChunkBuffer, data_parallel_size: int) -> List[int]:
    """Parameter elements in each data-parallel rank's slices of the buffer's buckets."""
    return [int(n) for n in _shard_elements(buffer, data_parallel_size)]


def _shard_elements(buffer: ChunkBuffer, data_parallel_size: int) -> np.ndarray:
    starts = np.array([s for s, _ in buffer.params], dtype=np.int64)
    lengths = np.array([e - s for s, e in buffer.params], dtype=np.int64)
    below = np.concatenate(([0], np.cumsum(lengths)))  # parameter elements before each parameter

    def covered(x: np.ndarray) -> np.ndarray:
        """Parameter elements below each offset x (params are sorted and disjoint)."""
        i = np.searchsorted(starts, x, side="left")  # parameters starting before x
        last = np.maximum(i - 1, 0)
        inside = np.clip(x - starts[last], 0, lengths[last])
        return np.where(i > 0, below[last] + inside, 0)

    counts = np.zeros(data_parallel_size, dtype=np.int64)
    for b_start, b_end in buffer.buckets:
        size = (b_end - b_start) // data_parallel_size
        edges = covered(b_start + size * np.arange(data_parallel_size + 1, dtype=np.int64))
        counts += np.diff(edges)
    return counts


def _bucket_size(layout: ParallelLayout, pipeline_rank: int, chunk: int, overlap_grad_reduce: bool) -> Optional[int]:
    """DistributedDataParallel's bucket_size for this chunk (megatron-core's default when unset)."""
    if not overlap_grad_reduce or pipeline_rank > 0 or chunk > 0:
        return None
    return max(40_000_000, 1_000_000 * layout.dp * layout.cp)


@lru_cache(maxsize=4096)
def _chunk_layout(
    shapes: Tuple[Tuple[int, bool], ...], n: int, distributed_optimizer: bool, bucket_size: Optional[int]
) -> Tuple[int, Tuple[int, ...], np.ndarray]:
    """(grad buffer numel, bucket numels, parameter elements per dp rank) of one chunk; cached, as the
    planner's search meets the same chunk (a run of identical layers) in many ranks and layouts."""
    params = [ParamShape("", numel, shared) for numel, shared in shapes]
    buffer = chunk_buffer(params, n, distributed_optimizer, bucket_size)
    per_rank = _shard_elements(buffer, n) if distributed_optimizer else np.zeros(n, dtype=np.int64)
    per_rank.flags.writeable = False
    return buffer.numel, tuple(end - start for start, end in buffer.buckets), per_rank


def _rank_layout(
    shapes: "Shapes", n: int, distributed_optimizer: bool, buckets: Tuple[Optional[int], ...]
) -> Tuple[Tuple[int, ...], Tuple[Tuple[int, ...], ...], np.ndarray]:
    """(grad buffer numel per chunk, bucket numels per chunk, parameter elements per dp rank summed over chunks)."""
    layouts = [_chunk_layout(chunk, n, distributed_optimizer, size) for chunk, size in zip(shapes, buckets)]
    per_rank = np.sum([per_rank for _, _, per_rank in layouts], axis=0)
    return tuple(numel for numel, _, _ in layouts), tuple(b for _, b, _ in layouts), per_rank


def rank_chunk_parameters(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, pipeline_rank: int, strict: bool = True
) -> List[List[ParamShape]]:
    """Parameters of each model chunk of a pipeline rank on one TP rank (model/param_count.py); `strict`
    refuses a layout that does not divide the model, else its shapes are rounded down (planner estimates)."""
    if not 0 <= pipeline_rank < layout.pp:
        raise MegatronSotaError(f"pipeline rank {pipeline_rank} is outside 0..{layout.pp - 1} (pp={layout.pp})")
    return [
        chunk_parameters(model, padded_vocab, layout.tp, layout.pp, layout.vpp, pipeline_rank, v, strict)
        for v in range(layout.vpp)
    ]


Shapes = Tuple[Tuple[Tuple[int, bool], ...], ...]
"""(numel, shared_embedding) of each parameter of each chunk of a pipeline rank."""


def rank_parameter_shapes(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, pipeline_rank: int, strict: bool = True
) -> Shapes:
    """rank_chunk_parameters without the names, cached (the planner's search asks for thousands of ranks)."""
    return _rank_shapes(tuple(vars(model).items()), padded_vocab, layout.tp, layout.pp, layout.vpp, pipeline_rank, strict)


@lru_cache(maxsize=4096)
def _rank_shapes(model_items: tuple, padded_vocab: int, tp: int, pp: int, vpp: int, pipeline_rank: int, strict: bool) -> Shapes:
    layout = ParallelLayout(tp=tp, pp=pp, vpp=vpp)
    chunks = rank_chunk_parameters(ModelConfig(**dict(model_items)), padded_vocab, layout, pipeline_rank, strict)
    return tuple(tuple((p.numel, p.shared_embedding) for p in chunk) for chunk in chunks)


def _layout_of_rank(
    model: ModelConfig, padded_vocab: int, layout: ParallelLayout, pipeline_rank: int, overlap_grad_reduce: bool, strict: bool
) -> Tuple[Shapes, Tuple[Tuple[int, ...], Tuple[Tuple[int, ...], ...], np.ndarray]]:
    shapes = rank_parameter_shapes(model, padded_vocab, layout, pipeline_rank, strict)
    buckets = tuple(_bucket_size(layout, pipeline_rank, v, overlap_grad_reduce) for v in range(len(shapes)))
    return shapes, _rank_layout(shapes, layout.dp * layout.cp, layout.distributed_optimizer, buckets)


def rank_buffers(
    model: ModelConfig,
    padded_vocab: int,
    layout: ParallelLayout,
    pipeline_rank: int,
    dp_rank: int,
    overlap_grad_reduce: bool = False,
    strict: bool = True,
) -> RankBuffers:
    """What DDP and the optimizer allocate on (pipeline_rank, dp_rank) under DDP (layout.fsdp must be none).

    dp_rank counts over the dp*cp ranks the buffers are sharded across; `overlap_grad_reduce` is
    parallel.overlap_grad_reduce (it only changes the bucketing of pipeline rank 0's first chunk).
    `strict=False` estimates a layout that does not divide the model instead of refusing it.
    """
    if layout.fsdp != "none":
        raise MegatronSotaError(f"rank_buffers models megatron-core's DDP buffers; layout has fsdp={layout.fsdp}")
    n = layout.dp * layout.cp
    if not 0 <= dp_rank < n:
        raise MegatronSotaError(f"data-parallel rank {dp_rank} is outside 0..{n - 1} (dp*cp = {n})")
    shapes, (grad_numels, bucket_numels, per_rank) = _layout_of_rank(
        model, padded_vocab, layout, pipeline_rank, overlap_grad_reduce, strict
    )
    dopt = layout.distributed_optimizer
    parameters = sum(numel for chunk in shapes for numel, _ in chunk)
    e = layout.bytes_per_element
    stepped = int(per_rank[dp_rank]) if dopt else parameters
    return RankBuffers(
        pipeline_rank=pipeline_rank,
        dp_rank=dp_rank,
        parameters=parameters,
        grad_buffer_numels=grad_numels,
        bucket_numels=bucket_numels,
        param_buffer_numels=grad_numels if dopt else tuple(0 for _ in grad_numels),
        optimizer_elements=stepped,
        weights=(sum(grad_numels) if dopt else parameters) * e,
        gradients=sum(grad_numels) * GRAD_BYTES,
        optimizer_states=stepped * ADAM_BYTES,
        master=stepped * MASTER_BYTES if e != 4 else 0,
    )


def fullest_rank_buffers(
    model: ModelConfig,
    padded_vocab: int,
    layout: ParallelLayout,
    pipeline_rank: int,
    overlap_grad_reduce: bool = False,
    strict: bool = True,
) -> RankBuffers:
    """rank_buffers of the data-parallel rank whose optimizer holds the most elements (the lowest such
    rank); weights and gradients are the same on every data-parallel rank, so it holds the most bytes."""
    per_rank = _layout_of_rank(model, padded_vocab, layout, pipeline_rank, overlap_grad_reduce, strict)[1][2]
    fullest = int(np.argmax(per_rank)) if layout.distributed_optimizer else 0  # the first of the ranks with the most
    return rank_buffers(model, padded_vocab, layout, pipeline_rank, fullest, overlap_grad_reduce, strict)
