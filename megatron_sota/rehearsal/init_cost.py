"""How long the real initialisation of a rank's weights takes, timed on one transformer layer on this CPU.

A rank of a large run builds `layers` transformer layers (all its virtual stages) plus the embedding on the first
pipeline stage and the output layer on the last. Building one layer with megatron-core's own code, at the job's
layout, over fake ranks (runtime/fake_world.py with real CPU tensors) and multiplying by the layer count gives the
rank's initialisation time on this machine's CPU without building the whole rank. megatron-core's CPU
initialisation (model/gpt_builder.py: use_cpu_initialization, what keeps the weights layout-independent) draws
every weight as a full fp32 master tensor on the CPU on every TP rank and keeps the rank's slice, on a GPU node too,
so what is timed here is what a GPU run does on its node's CPU (with its share of the cores). The local layer spec
is built (Transformer Engine cannot run here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class InitCost:
    """Seconds of initialisation of one rank, measured on this CPU with torch's default thread count."""

    rank: int
    seconds_per_layer: float
    """One transformer layer of this rank's first virtual stage."""
    layers: int
    """Transformer layers the rank builds (all its virtual stages)."""
    embedding_seconds: float
    """The word embedding (first pipeline stage), else 0."""
    output_seconds: float
    """The output layer (last pipeline stage; also where its weight is tied to the embedding), else 0."""
    threads: int
    """torch.get_num_threads() during the measurement."""

    @property
    def total_seconds(self) -> float:
        """The rank's extrapolated initialisation time: its layers plus its embedding and output layer."""
        return self.seconds_per_layer * self.layers + self.embedding_seconds + self.output_seconds


def _timed(build: Callable[[], torch.nn.Module]) -> float:
    start = time.perf_counter()
    module = build()
    seconds = time.perf_counter() - start
    del module
    return seconds


def time_layer_init(job: JobConfig, rank: int, world_size: int) -> InitCost:
    """Times one transformer layer (and the embedding / output layer where `rank` holds them) of `job`'s model at
    `job`'s layout, as rank `rank` of `world_size`, and extrapolates to the rank's layers.

    Makes its own fake world: it must not be called inside another one. The dtype is the one a GPU run uses.
    """
    from megatron.core import parallel_state
    from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
    from megatron.core.tensor_parallel import ColumnParallelLinear, model_parallel_cuda_manual_seed
    from megatron.core.transformer.spec_utils import build_module
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    from megatron_sota.model.gpt_builder import build_transformer_config, padded_vocab_size
    from megatron_sota.model.layer_spec import build_block_spec
    from megatron_sota.runtime.fake_world import fake_world

    p = job.parallel
    model_ranks = p.tp * p.pp * p.cp
    if world_size % model_ranks:
        raise MegatronSotaError(
            f"world size {world_size} is not a multiple of tp*pp*cp = {p.tp}*{p.pp}*{p.cp} = {model_ranks}"
        )
    vpp = p.vpp if p.vpp and p.vpp > 1 else None
    with fake_world(world_size, rank, device="cpu"):
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=p.tp,
            pipeline_model_parallel_size=p.pp,
            virtual_pipeline_model_parallel_size=vpp,
            context_parallel_size=p.cp,
        )
        try:
            model_parallel_cuda_manual_seed(job.train.seed)
            config = build_transformer_config(job.model, p, job.precision, job.train.recompute, "cuda", use_te=False)
            stages = list(range(vpp)) if vpp else [None]
            layers = sum(get_num_layers_to_build(config, vp_stage=s) for s in stages)
            first = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stages[0])
            last = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stages[-1])
            vocab = padded_vocab_size(job.model.vocab_size, job.model.make_vocab_size_divisible_by, p.tp)
            spec = build_block_spec(config, False, job.train.seed, stages[0]).layer_specs[0]  # reseeds per layer
            per_layer = _timed(lambda: build_module(spec, config=config, layer_number=1, vp_stage=stages[0]))
            embedding = output = 0.0
            if first:
                embedding = _timed(
                    lambda: LanguageModelEmbedding(config, vocab, job.model.max_position_embeddings, "rope")
                )
            if last and (not first or job.model.untie_embeddings_and_output_weights):
                # GPTModel's output layer, with its own weight unless the first stage holds the tied one.
                output = _timed(
                    lambda: ColumnParallelLinear(
                        config.hidden_size, vocab, config=config, init_method=config.init_method, bias=False
                    )
                )
        finally:
            parallel_state.destroy_model_parallel()
    return InitCost(
        rank=rank,
        seconds_per_layer=per_layer,
        layers=layers,
        embedding_seconds=embedding,
        output_seconds=output,
        threads=torch.get_num_threads(),
    )
