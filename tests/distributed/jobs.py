"""The small fp32 CPU job on the stdlib shards that the multi-rank, checkpoint, export and generation tests start from.

Only builds a JobConfig; it must not train, and the tests that need more steps or other keys set them themselves.
"""

from __future__ import annotations

from megatron_sota.config.job import JobConfig

STEPS = 3
"""Optimizer steps the layout-equivalence probes compare (the job runs one more)."""


def stdlib_job(shards, **parallel) -> JobConfig:
    """`shards` is conftest's StdlibShards; `parallel` sets ParallelConfig keys (and micro_batch_size)."""
    job = JobConfig()
    job.model.vocab_size = shards.vocab_size
    job.tokenizer.type = "SentencePieceTokenizer"
    job.tokenizer.model = shards.tokenizer_model
    job.data.paths = [shards.prefix]
    job.data.num_workers = 0
    job.train.seq_length = 64
    job.train.global_batch_size = 8
    job.train.micro_batch_size = parallel.pop("micro_batch_size", 2)
    job.train.iters = STEPS + 1
    job.train.eval_interval = 0
    job.optimizer.lr = 1e-3
    job.scheduler.warmup_iters = 1
    job.runtime.device = "cpu"
    job.logging.tensorboard = False
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job
