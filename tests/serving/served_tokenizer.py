"""The tokenizer a checkpoint was trained with, as the server builds it (a test helper)."""

from __future__ import annotations


def checkpoint_tokenizer(checkpoint: str):
    from megatron_sota.checkpointing.dist_reader import DistCheckpointReader
    from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
    from megatron_sota.data.tokenizer import build_configured_tokenizer

    job = DistCheckpointReader(resolve_checkpoint_dir(checkpoint, "checkpoint")).job_config()
    return build_configured_tokenizer(job.tokenizer, job.model.vocab_size)
