"""The real side of tests/integration/test_rehearsal_vs_real.py: one gloo rank builds its training state as the
trainer does, runs one real optimizer step, saves a real checkpoint, and reports what it holds.

Everything is read from the live objects (storages, DDP buffers, the optimizer's state), not through
megatron_sota/rehearsal/, so the rehearsal is compared with an independent measurement.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
from megatron_sota.config.compose import compose_job
from megatron_sota.config.job import JobConfig
from megatron_sota.training.step import train_step
from tests.distributed.probes import fresh_training_state

WORLD = 8
LAYOUT = ("parallel.tp=2", "parallel.pp=2", "parallel.vpp=2", "parallel.distributed_optimizer=true")


def rehearsal_job(model: str, dtype: str, *overrides: str) -> JobConfig:
    """The job both sides build: `model` (with `overrides`) at TP=2, PP=2, VPP=2 (DP=2 on 8 ranks), mock data, a
    short sequence. precision.dtype is explicit: the rehearsal builds for a GPU, where `auto` would mean bf16."""
    return compose_job([
        f"model={model}", *LAYOUT, f"precision.dtype={dtype}", "runtime.device=cpu", "train.seq_length=32",
        "train.micro_batch_size=1", "train.global_batch_size=4", "train.iters=2", "train.eval_interval=0",
        "data.num_workers=0", "logging.tensorboard=false", *overrides,
    ])


def _storage_bytes(tensors, seen: set) -> int:
    """Bytes of the storages behind `tensors`, each counted once across calls sharing `seen`."""
    total = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _inner_optimizers(optimizer) -> List[Any]:
    return [o.optimizer for o in getattr(optimizer, "chained_optimizers", [optimizer])]


def real_rank_probe(rank: int, job: JobConfig, run_dir: str, save_dir: str, save_optimizer: bool) -> Dict[str, Any]:
    """This rank's parameters, DDP buffers and their bytes; master and Adam bytes after one real step; then a save
    through CheckpointManager into `save_dir` (iter_0000001), of the weights only unless `save_optimizer`."""
    start = time.perf_counter()
    with fresh_training_state(job, run_dir) as state:
        built = time.perf_counter()
        params = [p for m in state.models for p in unwrap(m).parameters()]
        buffers = [b for m in state.models for b in (*m.buffers, *m.expert_parallel_buffers)]
        seen: set = set()
        weight_bytes = _storage_bytes(params, seen)
        gradient_bytes = _storage_bytes([p.main_grad for p in params], seen)
        t = job.train
        result = train_step(
            state.models, state.optimizer, state.scheduler, state.train_iterators, state.layout.num_microbatches,
            t.micro_batch_size, t.seq_length, state.session.device,
        )
        stepped = time.perf_counter()
        inner = _inner_optimizers(state.optimizer)
        main_params = [p for o in inner for g in o.param_groups for p in g["params"]]
        # fp32 main parameters that are views of the weights (an fp32 model) were claimed above and add nothing.
        master_bytes = _storage_bytes(main_params, seen)
        moments = [v for o in inner for s in o.state.values() for k, v in s.items() if k != "step"]
        state_names = sorted({k for o in inner for s in o.state.values() for k in s})
        optimizer_state_bytes = _storage_bytes(moments, seen)
        manager = CheckpointManager(job.checkpoint, save_dir)
        manager.save(state, Progress(iteration=1, consumed_samples=t.global_batch_size), "",
                     checkpoint_layout(job.parallel, state.layout.dp), include_optimizer=save_optimizer)
        manager.close()
        saved = time.perf_counter()
        return {
            "parameters": sum(p.numel() for p in params),
            "grad_buffer_numels": [b.grad_data.numel() for b in buffers],
            "param_buffer_numels": [b.param_data.numel() for b in buffers if b.param_data is not None],
            "weight_bytes": weight_bytes,
            "gradient_bytes": gradient_bytes,
            "master_bytes": master_bytes,
            "optimizer_state_bytes": optimizer_state_bytes,
            "state_names": state_names,
            "loss": result.loss,
            "seconds": {"build": built - start, "step": stepped - built, "save": saved - stepped},
            "param_dtypes": sorted({str(p.dtype) for p in params}),
        }


Chunk = Tuple[str, Tuple[int, ...], Tuple[int, ...], str]
"""key, offsets, sizes, dtype of one written piece of a tensor."""


def written_chunks(checkpoint_dir: str) -> Tuple[set, Dict[str, Tuple[int, ...]]]:
    """Every tensor piece a save wrote, from torch.distributed.checkpoint's metadata, and each tensor's global size."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = FileSystemReader(checkpoint_dir).read_metadata()
    chunks, sizes = set(), {}
    for key, meta in metadata.state_dict_metadata.items():
        if not isinstance(meta, TensorStorageMetadata):
            continue
        sizes[key] = tuple(meta.size)
        for chunk in meta.chunks:
            dtype = str(meta.properties.dtype).replace("torch.", "")
            chunks.add((key, tuple(chunk.offsets), tuple(chunk.sizes), dtype))
    return chunks, sizes


def rehearsed_chunks(shards: Sequence[Any]) -> set:
    """The rehearsal's CheckpointShards as written pieces: axes prepended to the local shape (the layer index of
    stacked layers) are one element long; a flattened range would have to be a whole tensor to be written as is."""
    chunks = set()
    for s in shards:
        if s.flattened_range is not None:
            raise AssertionError(f"{s.key}: a flattened range, which the fully reshardable format does not write")
        prepend = len(s.global_offset) - len(s.local_shape)
        chunks.add((s.key, s.global_offset, (1,) * prepend + s.local_shape, s.dtype))
    return chunks


def rehearse_all(job: JobConfig, world_size: int = WORLD) -> List[Any]:
    """rehearse_rank for every rank of the world, in this process when it has no process group of its own (the
    fake world would replace it), else in a fresh one-rank process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from megatron_sota.runtime.local_ranks import run_distributed

        return run_distributed(_rehearse_all_probe, 1, job, world_size)[0]
    return _rehearse_all_probe(0, job, world_size)


def _rehearse_all_probe(rank: int, job: JobConfig, world_size: int) -> List[Any]:
    from megatron_sota.rehearsal.rank import rehearse_rank

    return [rehearse_rank(job, world_size, r, checkpoint=True) for r in range(world_size)]
