"""Everything a run holds between steps: model chunks, optimizer, schedule, data iterators.

Built here from the typed config inside a distributed session; the loop, tests and later
checkpointing all work on this one object instead of rebuilding pieces themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.checkpointing.manager import Progress
from megatron_sota.config.job import JobConfig
from megatron_sota.config.machine import Machine, MachineChoices, machine_choices, probe_machine
from megatron_sota.config.presets import preset_vocab_size
from megatron_sota.config.validation import Layout, validate_job
from megatron_sota.data.blend import SampleCounts, build_datasets, build_loader, sample_counts
from megatron_sota.data.mix import ResolvedBlend, resolve_blend
from megatron_sota.data.tokenizer import build_configured_tokenizer
from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
from megatron_sota.model.kernel_choice import KernelChoice, choose_kernels
from megatron_sota.parallelize.ddp import scale_losses_by, wrap_in_ddp
from megatron_sota.runtime.session import Session
from megatron_sota.training.objective import Objective
from megatron_sota.training.optimization import build_optimizer, build_scheduler
from megatron_sota.training.resume import ResumePoint

logger = logging.getLogger(__name__)


@dataclass
class CheckedInputs:
    """What can be known before any process group exists: layout, machine choices, tokenizer, checked data blend."""

    layout: Layout
    tokenizer: Any
    blend: Optional[ResolvedBlend]
    """The checked shards and their weights; None for mock data."""
    padded_vocab: int
    choices: MachineChoices
    """Device, dtype and layer spec the model is built with (what `auto` became here)."""

    def job_as_built(self, job: JobConfig) -> JobConfig:
        """`job` with the tokenizer's vocabulary as model.vocab_size: config.yaml and checkpoints record
        the model that was built, not the preset's nominal size."""
        return dataclasses.replace(job, model=dataclasses.replace(job.model, vocab_size=self.tokenizer.vocab_size))


def _warn_if_vocab_size_replaced(job: JobConfig, used: int) -> None:
    """model.vocab_size sizes only a run without a tokenizer file; otherwise the tokenizer's vocabulary wins,
    silently where the value is the preset's nominal one, with a warning where someone stated another."""
    if used == job.model.vocab_size or job.model.vocab_size == preset_vocab_size(job.model.name):
        return
    tok = job.tokenizer
    source = {"NullTokenizer": ("vocab_size", tok.vocab_size), "GPT2BPETokenizer": ("vocab_file", tok.vocab_file)}
    key, value = source.get(tok.type, ("model", tok.model))
    logger.warning(
        f"model.vocab_size={job.model.vocab_size} differs from the tokenizer's vocabulary of {used} tokens "
        f"(tokenizer.type={tok.type}, tokenizer.{key}={value}): the model is built for {used} and config.yaml "
        f"records model.vocab_size={used}; set model.vocab_size={used} to silence this warning"
    )


def check_inputs(
    job: JobConfig, world_size: int, machine: Optional[Machine] = None, more_problems: Sequence[str] = ()
) -> CheckedInputs:
    """Every config problem (with `more_problems`) in one error, then the tokenizer and the data's files."""
    machine = machine or probe_machine(job)
    layout = validate_job(job, world_size, machine, more_problems)
    tokenizer = build_configured_tokenizer(job.tokenizer, job.model.vocab_size)
    _warn_if_vocab_size_replaced(job, tokenizer.vocab_size)
    # A post-training objective reads its own files (training/objective.py), not the blend.
    blend = None if job.data.mock or job.posttrain is not None else resolve_blend(job.data, tokenizer.vocab_size)
    padded = padded_vocab_size(tokenizer.vocab_size, job.model.make_vocab_size_divisible_by, job.parallel.tp)
    return CheckedInputs(layout, tokenizer, blend, padded, machine_choices(job, machine))


@dataclass
class TrainingState:
    job: JobConfig
    inputs: CheckedInputs
    session: Session
    config: TransformerConfig
    models: list
    """One megatron-core DDP-wrapped GPTModel per virtual pipeline stage on this rank (parallelize.ddp)."""
    optimizer: Any
    scheduler: Any
    train_dataset: Any
    valid_dataset: Any
    train_iterators: Optional[list] = None
    """Set by start_data once the consumed-sample count (0, or a checkpoint's) is known."""
    sample_counts: Optional[SampleCounts] = None
    """The samples each split was built to provide (training/resume.py: from a checkpoint's position on)."""
    kernels: KernelChoice = KernelChoice()
    """The fusions the model was built with (the `kernels` group resolved for this device)."""
    objective: Objective = dataclasses.field(default_factory=Objective)
    """What the run trains on (training/objective.py); pretraining by default."""

    @property
    def layout(self) -> Layout:
        return self.inputs.layout

    @property
    def document_eod(self) -> Optional[int]:
        """The token that ends each document attention stays within (data.reset_attention_mask), else None."""
        return self.inputs.tokenizer.eod if self.job.data.reset_attention_mask else None

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


def build_training_state(
    job: JobConfig, inputs: CheckedInputs, session: Session, run_dir: str, resume: Optional[ResumePoint] = None,
    objective: Optional[Objective] = None,
) -> TrainingState:
    """The run's objects; `resume` (training/resume.py) sizes the train split from its consumed samples
    and says whose LR schedule a loaded checkpoint keeps; `objective` (pretraining when None) hooks the
    model chunks before DDP and may bring its own datasets."""
    objective = objective or Objective()
    t = job.train
    choices = inputs.choices
    if session.device.type != choices.device:
        raise ValueError(f"the session runs on {session.device.type}, but the inputs were checked for {choices.device}")
    device_type, use_te = choices.device, choices.transformer_engine
    kernels = choose_kernels(job.kernels, device_type, choices.dtype, use_te)
    config = build_transformer_config(job.model, job.parallel, job.precision, t.recompute, device_type, use_te, kernels)
    chunks = build_model_chunks(
        job.model, config, inputs.padded_vocab, t.seq_length, t.seed, use_te, kernels, objective.model_class(job)
    )
    chunks = objective.model_hook(chunks, config)
    models = wrap_in_ddp(chunks, config, job.parallel, session.device)
    optimizer = build_optimizer(
        job.optimizer, job.scheduler, job.parallel, config, job.precision.initial_loss_scale, models,
        objective.param_group_overrides(job), fused_adam=kernels.fused_adam,
    )
    scale_losses_by(config, optimizer)
    follow = resume is None or resume.follow_checkpoint_schedule
    scheduler = build_scheduler(optimizer, job.optimizer, job.scheduler, t.iters, follow_checkpoint=follow)
    start = resume.progress if resume is not None else Progress()
    counts = sample_counts(t.iters, t.global_batch_size, t.eval_iters, start.iteration, start.consumed_samples)
    own = objective.datasets(job, inputs, counts, run_dir)
    if own is not None:
        train_ds, valid_ds = own
    else:
        cache_dir = job.data.cache_dir or os.path.join(run_dir, "data_cache")
        train_ds, valid_ds, _ = build_datasets(
            job.data, inputs.tokenizer, t.seq_length, t.seed, counts, cache_dir, inputs.blend
        )
    return TrainingState(
        job=job,
        inputs=inputs,
        session=session,
        config=config,
        models=models,
        optimizer=optimizer,
        scheduler=scheduler,
        train_dataset=train_ds,
        valid_dataset=valid_ds,
        sample_counts=counts,
        kernels=kernels,
        objective=objective,
    )
