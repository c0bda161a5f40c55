"""Probe of the planner-buffer tests: builds a rank's model chunks, DDP buffers and optimizer as the
trainer does (gpt_builder, parallelize.ddp, training.optimization) and reads back what they allocated.

Returns plain numbers only, so a test can compare them with planning/buffers.py's closed form.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from megatron.core import parallel_state

from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.config.model import ModelConfig
from megatron_sota.config.optim import OptimizerConfig, PrecisionConfig, SchedulerConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config
from megatron_sota.parallelize.ddp import wrap_in_ddp
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.optimization import build_optimizer


def _leaf_optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def built_rank_buffers(rank: int, model: ModelConfig, parallel: ParallelConfig, dtype: str, padded_vocab: int) -> Dict:
    """What one rank really holds: parameter names/sizes per chunk, its DDP buffers and optimizer shard."""
    with distributed_session(parallel, device="cpu") as session:
        precision = PrecisionConfig(dtype=dtype)
        config = build_transformer_config(model, parallel, precision, "none", "cpu", use_te=False)
        chunks = build_model_chunks(model, config, padded_vocab, 64, 1234, use_te=False)
        models = wrap_in_ddp(chunks, config, parallel, session.device)
        optimizer = build_optimizer(OptimizerConfig(), SchedulerConfig(), parallel, config, 1.0, models)
        dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        result = {
            "pipeline_rank": parallel_state.get_pipeline_model_parallel_rank(),
            "tp_rank": parallel_state.get_tensor_model_parallel_rank(),
            "dp_rank": dp_group.rank(),
            "chunk_params": [[(name, p.numel()) for name, p in unwrap(m).named_parameters()] for m in models],
            "grad_buffer_numels": [[b.grad_data.numel() for b in m.buffers] for m in models],
            "grad_buffer_bytes": sum(b.grad_data.numel() * b.grad_data.element_size() for m in models for b in m.buffers),
            "param_buffer_bytes": sum(
                b.param_data.numel() * b.param_data.element_size() for m in models for b in m.buffers if b.param_data is not None
            ),
            "bucket_numels": [[[k.grad_data.numel() for k in b.buckets] for b in m.buffers] for m in models],
            "param_bytes": sum(p.numel() * p.element_size() for m in models for p in m.module.parameters()),
        }
        leaves = _leaf_optimizers(optimizer)
        if parallel.distributed_optimizer:
            main = [p for opt in leaves for g in opt.shard_fp32_from_float16_groups for p in g]
            fp32 = [p for opt in leaves for g in opt.shard_fp32_groups for p in g]
        else:
            main = [p for opt in leaves for g in getattr(opt, "fp32_from_float16_groups", []) for p in g]
            fp32 = [p for opt in leaves for g in getattr(opt, "fp32_from_fp32_groups", []) for p in g]
            if not hasattr(leaves[0], "fp32_from_float16_groups"):  # FP32Optimizer steps the model's own params
                fp32 = [p for opt in leaves for g in opt.optimizer.param_groups for p in g["params"]]
        stepped = [p for opt in leaves for g in opt.optimizer.param_groups for p in g["params"]]
        result["master_elements"] = sum(p.numel() for p in main)
        result["optimizer_elements"] = sum(p.numel() for p in stepped)
        result["fp32_shard_elements"] = sum(p.numel() for p in fp32)
        return result


class _StubGroup:
    """Stands in for a data-parallel group of `size` ranks seen from rank `rank`: the buffer and the
    optimizer's range maps only ask a group its size and rank."""

    def __init__(self, size: int, rank: int = 0):
        self._size, self._rank = size, rank

    def size(self) -> int:
        return self._size

    def rank(self) -> int:
        return self._rank


def real_buffer_layouts(rank: int, cases: List[Tuple[List[Tuple[int, bool]], int, bool, Optional[int]]]) -> List[Dict]:
    """megatron-core's own _ParamAndGradBuffer (and DistributedOptimizer's shard ranges) for each case of
    (parameter (numel, shared_embedding) in registration order, dp*cp size, distributed optimizer, bucket size)."""
    import torch
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.distributed.param_and_grad_buffer import _ParamAndGradBuffer
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.process_groups_config import ProcessGroupCollection

    results = []
    with distributed_session(ParallelConfig(), device="cpu"):
        for shapes, size, dopt, bucket_size in cases:
            params = [torch.nn.Parameter(torch.zeros(numel)) for numel, _ in shapes]
            for param, (_, shared) in zip(params, shapes):
                if shared:
                    param.shared_embedding = True
            config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=dopt)
            groups = ProcessGroupCollection()
            groups.tp, groups.dp_cp = _StubGroup(1), _StubGroup(size)
            names = {p: str(i) for i, p in enumerate(params)}
            buffer = _ParamAndGradBuffer(
                config, torch.float32, torch.float32, params, _StubGroup(size), bucket_size, names, 1.0, list(range(len(params))), False, groups
            )
            shards = []
            if dopt:
                for dp_rank in range(size):
                    buffer.data_parallel_group = _StubGroup(size, dp_rank)
                    maps = [DistributedOptimizer._build_model_gbuf_range(buffer, i) for i in range(len(buffer.buckets))]
                    shards.append(sum(len(r["param"]) for m in maps for r in m["param_map"].values()))
            results.append(
                {
                    "numel": buffer.numel,
                    "grad_numel": buffer.grad_data.numel(),
                    "params": sorted(buffer.param_index_map[p][:2] for p in params),
                    "buckets": [(b.offset, b.offset + b.grad_data.numel()) for b in buffer.buckets],
                    "shards": shards,
                }
            )
    return results
