"""Everything a run holds between steps: model chunks, optimizer, schedule, data iterators.

Built here from the typed config inside a distributed session; the loop, tests and later
checkpointing all work on this one object instead of rebuilding pieces themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.config.job import JobConfig
from megatron_sota.config.validation import Layout, validate_job
from megatron_sota.data.blend import build_datasets, build_loader, sample_counts
from megatron_sota.data.mix import ResolvedBlend, resolve_blend
from megatron_sota.data.tokenizer import build_configured_tokenizer
from megatron_sota.model.gpt_builder import (
    build_model_chunks,
    build_transformer_config,
    choose_transformer_engine,
    padded_vocab_size,
    resolve_dtype,
)
from megatron_sota.model.kernel_choice import KernelChoice, choose_kernels
from megatron_sota.runtime.session import Session
from megatron_sota.training.optimization import build_optimizer, build_scheduler, wrap_for_training


@dataclass
class CheckedInputs:
    """What can be known before any process group exists: layout, tokenizer, checked data blend."""

    layout: Layout
    tokenizer: Any
    blend: Optional[ResolvedBlend]
    """The checked shards and their weights; None for mock data."""
    padded_vocab: int


def check_inputs(job: JobConfig, world_size: int) -> CheckedInputs:
    layout = validate_job(job, world_size)
    tokenizer = build_configured_tokenizer(job.tokenizer, job.model.vocab_size)
    blend = None if job.data.mock else resolve_blend(job.data, tokenizer.vocab_size)
    padded = padded_vocab_size(tokenizer.vocab_size, job.model.make_vocab_size_divisible_by, job.parallel.tp)
    return CheckedInputs(layout, tokenizer, blend, padded)


@dataclass
class TrainingState:
    job: JobConfig
    inputs: CheckedInputs
    session: Session
    config: TransformerConfig
    use_te: bool
    models: list
    """One megatron-core DDP-wrapped GPTModel per virtual pipeline stage on this rank."""
    optimizer: Any
    scheduler: Any
    train_dataset: Any
    valid_dataset: Any
    train_iterators: Optional[list] = None
    """Set by start_data once the consumed-sample count (0, or a checkpoint's) is known."""
    kernels: KernelChoice = KernelChoice()
    """The fusions the model was built with (the `kernels` group resolved for this device)."""

    @property
    def layout(self) -> Layout:
        return self.inputs.layout

    def start_data(self, consumed_samples: int) -> None:
        """Training batches continue right after the `consumed_samples` already seen."""
        self.train_iterators = _iterators(self.train_dataset, self.job, self.layout, consumed_samples, len(self.models))

    def valid_iterators(self) -> Optional[list]:
        """Fresh iterators over the validation split: every validation sees the same batches."""
        return _iterators(self.valid_dataset, self.job, self.layout, 0, len(self.models))


def _iterators(dataset, job: JobConfig, layout: Layout, consumed: int, chunks: int):
    if dataset is None:
        return None
    dp_rank = parallel_state.get_data_parallel_rank()
    # One iterator per model chunk: each virtual stage reads the same micro-batches in turn.
    return [
        build_loader(dataset, consumed, job.train.micro_batch_size, dp_rank, layout.dp, job.data.num_workers)
        for _ in range(chunks)
    ]


def build_training_state(job: JobConfig, inputs: CheckedInputs, session: Session, run_dir: str) -> TrainingState:
    t = job.train
    device_type = session.device.type
    use_te = choose_transformer_engine(job.model, device_type)
    kernels = choose_kernels(job.kernels, device_type, resolve_dtype(job.precision, device_type), use_te)
    config = build_transformer_config(job.model, job.parallel, job.precision, t.recompute, device_type, use_te, kernels)
    chunks = build_model_chunks(job.model, config, inputs.padded_vocab, t.seq_length, t.seed, use_te, kernels)
    models = wrap_for_training(chunks, config, job.parallel, session.device)
    optimizer = build_optimizer(job.optimizer, job.scheduler, job.parallel, config, job.precision.initial_loss_scale, models)
    # The schedules multiply each micro-batch loss by the current loss scale (1 unless fp16);
    # the optimizer divides the gradients by it again before clipping and the update.
    config.grad_scale_func = optimizer.scale_loss
    scheduler = build_scheduler(optimizer, job.optimizer, job.scheduler, t.iters)
    counts = sample_counts(t.iters, t.global_batch_size, t.eval_iters)
    cache_dir = job.data.cache_dir or os.path.join(run_dir, "data_cache")
    train_ds, valid_ds, _ = build_datasets(
        job.data, inputs.tokenizer, t.seq_length, t.seed, counts, cache_dir, inputs.blend
    )
    return TrainingState(
        job=job,
        inputs=inputs,
        session=session,
        config=config,
        use_te=use_te,
        models=models,
        optimizer=optimizer,
        scheduler=scheduler,
        train_dataset=train_ds,
        valid_dataset=valid_ds,
        kernels=kernels,
    )
