"""Loads a checkpoint's model for inference at a tensor-parallel layout (pipeline collapsed to 1) and runs it.

The model shape comes from the run config stored in the checkpoint. Call inside a
distributed_session whose ParallelConfig is `inference_parallel(tp)` on every rank.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from megatron_sota.checkpointing.manager import load_model_weights
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.job import JobConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.conversion.dist_reader import DistCheckpointReader
from megatron_sota.conversion.llama_mapping import EMBEDDING
from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, choose_transformer_engine


@dataclass
class InferenceModel:
    job: JobConfig
    model: torch.nn.Module
    vocab_size: int
    """The tokenizer's vocabulary; logits beyond it belong to padding rows and are dropped."""
    device: torch.device

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor, cache=None) -> torch.Tensor:
        """Full-vocabulary fp32 logits for token ids [batch, seq] (causal, no padding).

        Without `cache`: [batch, seq, vocab] for the whole sequence. With a megatron-core
        StaticInferenceContext: `tokens` continue the cached ones, their keys and values are
        added to the cache, and only the last position's logits come back, [batch, 1, vocab].
        """
        tokens = tokens.to(self.device)
        offset = cache.sequence_len_offset if cache is not None else 0
        positions = torch.arange(offset, offset + tokens.shape[1], device=self.device).unsqueeze(0).expand_as(tokens)
        output = self.model(tokens, positions, None, inference_context=cache, runtime_gather_output=True)
        if cache is not None:
            cache.increment_sequence_len_offset(tokens.shape[1])
        return output[..., : self.vocab_size].float()


def inference_parallel(tp: int) -> ParallelConfig:
    return ParallelConfig(tp=tp, pp=1, distributed_optimizer=False)


def load_inference_model(checkpoint_dir: str, device: torch.device, dtype: str | None = None) -> InferenceModel:
    """A checkpoint's (or a checkpoint directory's latest) weights in a fresh model at the session's TP size; `dtype` overrides the run's precision."""
    from megatron.core import parallel_state

    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir, "checkpoint")
    reader = DistCheckpointReader(checkpoint_dir)
    job = reader.job_config()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    job.parallel = inference_parallel(tp)
    if dtype is not None:
        job.precision = dataclasses.replace(job.precision, dtype=dtype)
    use_te = choose_transformer_engine(job.model, device.type)
    config = build_transformer_config(job.model, job.parallel, job.precision, "none", device.type, use_te)
    config.perform_initialization = False  # the checkpoint overwrites every weight
    padded = reader.shape(EMBEDDING)[0]
    (model,) = build_model_chunks(job.model, config, padded, job.model.max_position_embeddings, job.train.seed, use_te)
    model.to(device)
    load_model_weights([model], checkpoint_dir)
    model.eval()
    vocab_size = reader.common.get("vocab_size") or padded
    return InferenceModel(job=job, model=model, vocab_size=vocab_size, device=device)
