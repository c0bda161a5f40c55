"""Loads a checkpoint's model for inference at a tensor-parallel layout (pipeline collapsed to 1) and runs it.

The model shape comes from the run config stored in the checkpoint. Call inside a
distributed_session whose ParallelConfig is `inference_parallel(tp)` on every rank.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from megatron.core.models.gpt import GPTModel

from megatron_sota.checkpointing.dist_reader import DistCheckpointReader
from megatron_sota.checkpointing.manager import load_model_weights
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.job import JobConfig
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config


@dataclass
class InferenceModel:
    job: JobConfig
    model: torch.nn.Module
    vocab_size: int
    """The tokenizer's vocabulary; logits beyond it belong to padding rows and are dropped."""
    device: torch.device

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor, cache=None, pad_lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Full-vocabulary fp32 logits for token ids [batch, seq], causal.

        Without `cache`: [batch, seq, vocab] for the whole sequence. With a megatron-core
        StaticInferenceContext: `tokens` continue the cached ones, their keys and values are
        added to the cache, and only the last position's logits come back, [batch, 1, vocab].
        `pad_lengths` [batch]: how many of each row's first positions (counted from the start
        of the cache) are left padding; no query attends to them and positions count real
        tokens only. None or all zero is the unpadded fast path (no mask at all).
        """
        tokens = tokens.to(self.device)
        offset = cache.sequence_len_offset if cache is not None else 0
        pads = _pad_tensor(pad_lengths, tokens.shape[0], self.device)
        positions = torch.arange(offset, offset + tokens.shape[1], device=self.device).unsqueeze(0) - pads[:, None]
        mask = left_padding_mask(pads, offset, tokens.shape[1]) if bool(pads.any()) else None
        output = self.model(tokens, positions.clamp(min=0), mask, inference_context=cache, runtime_gather_output=True)
        if cache is not None:
            cache.increment_sequence_len_offset(tokens.shape[1])
        return output[..., : self.vocab_size].float()


def _pad_tensor(pad_lengths: Optional[Sequence[int]], batch: int, device: torch.device) -> torch.Tensor:
    """Pad counts as a [batch] tensor on the model's device (zeros for None: no padding)."""
    if pad_lengths is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    pads = torch.as_tensor(pad_lengths, dtype=torch.long, device=device)
    if pads.shape != (batch,):
        raise MegatronSotaError(f"pad_lengths: expected one count per row ({batch}), found shape {tuple(pads.shape)}")
    return pads


def left_padding_mask(pad_lengths: torch.Tensor, offset: int, q_len: int) -> torch.Tensor:
    """[batch, 1, q_len, offset + q_len] bool, True = masked out: the complete mask SDPACoreAttention takes.

    Queries are positions offset.. of the cache, keys all positions 0..; a key is masked when it
    is in the query's future or is one of the row's pads. A pad query still sees itself: a query
    with no key at all is NaN on some SDPA kernels, and the NaN would reach real queries through
    the next layer's values.
    """
    k_len = offset + q_len
    keys = torch.arange(k_len, device=pad_lengths.device)
    queries = torch.arange(offset, k_len, device=pad_lengths.device)
    future = keys[None, :] > queries[:, None]
    itself = keys[None, :] == queries[:, None]
    pad_key = keys[None, :] < pad_lengths[:, None]
    return (future[None] | (pad_key[:, None, :] & ~itself[None]))[:, None]


def inference_parallel(tp: int) -> ParallelConfig:
    return ParallelConfig(tp=tp, pp=1, distributed_optimizer=False)


def load_inference_model(
    checkpoint_dir: str, device: torch.device, dtype: str | None = None, model_class: Optional[Callable] = None
) -> InferenceModel:
    """A checkpoint's (or a checkpoint directory's latest) weights in a fresh model at the session's TP size; `dtype`
    overrides the run's precision; `model_class` builds another GPTModel kind with the same arguments (a reward model)."""
    from megatron.core import parallel_state

    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir, "checkpoint")
    reader = DistCheckpointReader(checkpoint_dir)
    job = reader.job_config()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    job.parallel = inference_parallel(tp)
    # fp8 compute needs Transformer Engine's layers, which inference does not build; it runs in the run's dtype.
    job.precision = dataclasses.replace(job.precision, fp8=None, dtype=dtype or job.precision.dtype)
    # Local spec always: left-padding masks go through SDPACoreAttention (both specs save the same keys).
    use_te = False
    config = build_transformer_config(job.model, job.parallel, job.precision, "none", device.type, use_te)
    config.perform_initialization = False  # the checkpoint overwrites every weight
    padded = reader.padded_vocab_size()
    (model,) = build_model_chunks(
        job.model, config, padded, job.model.max_position_embeddings, job.train.seed, use_te,
        model_class=model_class or GPTModel,
    )
    model.to(device)
    load_model_weights([model], checkpoint_dir)
    model.eval()
    vocab_size = reader.common.get("vocab_size") or padded
    return InferenceModel(job=job, model=model, vocab_size=vocab_size, device=device)
