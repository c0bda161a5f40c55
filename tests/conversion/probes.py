"""Rank bodies of the conversion tests: megatron_sota's own forward and greedy decoding from a checkpoint."""

from __future__ import annotations

import os
from typing import List

import torch
from omegaconf import OmegaConf

from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.runtime.session import distributed_session


def logits_probe(rank: int, checkpoint: str, tokens: torch.Tensor, tp: int) -> torch.Tensor:
    with distributed_session(inference_parallel(tp), "cpu") as session:
        return load_inference_model(checkpoint, session.device, "fp32").logits(tokens)


def greedy_probe(rank: int, checkpoint: str, prompt: torch.Tensor, new_tokens: int, tp: int) -> List[int]:
    """Greedy continuation, recomputing the whole sequence each step (no cache: the reference)."""
    with distributed_session(inference_parallel(tp), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        sequence = prompt.clone()
        for _ in range(new_tokens):
            next_id = model.logits(sequence)[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_id], dim=1)
        return sequence[0, prompt.shape[1]:].tolist()


def resave_probe(rank: int, checkpoint: str, save_dir: str) -> None:
    """Loads a checkpoint's weights at this world's TP (PP=1) and saves them again, weights only."""
    from types import SimpleNamespace

    from megatron.core import parallel_state

    from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
    from megatron_sota.config.run import CheckpointConfig

    tp = int(os.environ["WORLD_SIZE"])
    with distributed_session(inference_parallel(tp), "cpu") as session:
        loaded = load_inference_model(checkpoint, session.device)
        manager = CheckpointManager(CheckpointConfig(), save_dir, vocab_size=loaded.vocab_size)
        layout = checkpoint_layout(loaded.job.parallel, parallel_state.get_data_parallel_world_size())
        state = SimpleNamespace(models=[loaded.model], optimizer=None, scheduler=None)
        manager.save(state, Progress(), OmegaConf.to_yaml(OmegaConf.structured(loaded.job)), layout, include_optimizer=False)
        manager.close()
