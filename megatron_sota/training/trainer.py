"""Pretraining: checks every input up front, builds the run, resumes, and hands the steps to a Trainer.

Callable in-process (tests, notebooks) as well as from the Hydra entry point; it never
parses command lines and reads no global state but the launcher's environment. The loop itself
is training/loop.py's, its per-step duties training/callbacks/'s.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional, Sequence

import torch
from omegaconf import OmegaConf

from megatron_sota.atomic_files import write_text
from megatron_sota.checkpointing import paths
from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout, resolve_resume
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.checkpointing.storage import check_writable
from megatron_sota.config.job import JobConfig
from megatron_sota.config.machine import machine_choices, probe_machine
from megatron_sota.data.mix_report import data_mix_report, format_data_mix, write_data_mix
from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.task_checks import task_problems
from megatron_sota.model.param_count import count_params, format_count
from megatron_sota.runtime.allocation import allocation_problems
from megatron_sota.runtime.launch_env import LaunchEnv, read_launch_env
from megatron_sota.runtime.log import PACKAGE_LOGGER, setup_logging
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.callbacks.checkpoints import PeriodicCheckpoint
from megatron_sota.training.callbacks.evaluation import InLoopEvaluation
from megatron_sota.training.callbacks.exports import HFExport
from megatron_sota.training.callbacks.health import LossHealthCheck
from megatron_sota.training.callbacks.metrics_log import MetricsLog
from megatron_sota.training.callbacks.preemption import Preemption
from megatron_sota.training.callbacks.validation import Validation
from megatron_sota.training.fault_injection import fault_callbacks
from megatron_sota.training.hf_export import BackgroundExporter
from megatron_sota.training.in_loop_eval import InLoopEvaluator
from megatron_sota.training.loop import Trainer, TrainSummary
from megatron_sota.training.metrics import MetricsWriter, drop_rows_after
from megatron_sota.training.objective import Objective
from megatron_sota.training.preemption import StopWatch
from megatron_sota.training.resume import plan_resume
from megatron_sota.training.state import CheckedInputs, TrainingState, build_training_state, check_inputs


logger = logging.getLogger(__name__)


def refuse_foreign_checkpoints(save_dir: str, resume: str) -> None:
    """With checkpoint.resume=never, a directory holding checkpoints is not written to."""
    if resume != "never":
        return
    found = paths.complete_iterations(save_dir)
    if found or os.path.exists(os.path.join(save_dir, paths.TRACKER)):
        raise MegatronSotaError(
            f"checkpoint.dir={save_dir} already holds checkpoints"
            + (f" (iter_{found[-1]:07d})" if found else "")
            + ": set checkpoint.resume=auto to continue that run, or choose another hydra.run.dir"
        )


def save_resolved_config(text: str, run_dir: str, command_line: str) -> None:
    """Writes the resolved config (YAML) to <run_dir>/config.yaml; names the file (the whole text at DEBUG level)."""
    path = os.path.join(run_dir, "config.yaml")
    write_text(path, f"# {command_line}\n{text}" if command_line else text)
    logger.info(f"resolved config: {path}")
    logger.debug(f"resolved config:\n{text}")


def _describe(state: TrainingState) -> int:
    job, layout = state.job, state.layout
    counts = count_params(job.model, state.inputs.padded_vocab, job.parallel.pp)
    stages = ", ".join(f"stage {i}: {n:,} ({format_count(n)})" for i, n in enumerate(counts.per_stage))
    logger.info(
        f"model {job.model.name}: {counts.total:,} parameters ({format_count(counts.total)}); "
        f"non-embedding {counts.non_embedding:,}; per pipeline stage: {stages}\n"
        f"layout: world {layout.world_size} = tp {job.parallel.tp} x pp {job.parallel.pp} x cp {job.parallel.cp} "
        f"x dp {layout.dp}; vpp {job.parallel.virtual_stages}; sp {job.parallel.sp}; "
        f"{layout.num_microbatches} micro-batches of {job.train.micro_batch_size} per step; "
        f"kernels: {'Transformer Engine' if state.inputs.choices.transformer_engine else 'local + SDPA'} ({state.kernels.describe()}); "
        f"vocab {state.inputs.tokenizer.vocab_size} padded to {state.inputs.padded_vocab}"
    )
    return counts.total


def report_data_mix(state: TrainingState, run_dir: str) -> None:
    """Logs the samples each source and prefix contributes to this run; saves data_mix.json/.png."""
    blend, t, counts = state.inputs.blend, state.job.train, state.sample_counts
    if blend is None:
        return  # mock data
    splits = {"train": (state.train_dataset, counts.train)}
    if t.eval_interval > 0:
        splits["valid"] = (state.valid_dataset, counts.valid)
    report = data_mix_report(blend, splits, t.seq_length)
    logger.info(format_data_mix(report))
    write_data_mix(report, run_dir)


def standard_callbacks(
    state: TrainingState, writer: MetricsWriter, exporter: BackgroundExporter, evaluator: InLoopEvaluator, watch: StopWatch
) -> List[Callback]:
    """Pretraining's per-step duties, in the order a step needs them: the exports' before the checkpoints'
    (finished exports unpin before a save prunes), preemption last (it stops after everything else)."""
    job = state.job
    return [
        LossHealthCheck(job.train.max_skipped_steps, job.train.loss_spike_factor),
        MetricsLog(writer, job.logging.interval),
        Validation(writer, job.train.eval_interval),
        InLoopEvaluation(evaluator, writer),
        HFExport(exporter),
        PeriodicCheckpoint(job.checkpoint.interval, job.checkpoint.save_at_end),
        Preemption(watch),
    ]


def check_before_process_groups(job: JobConfig, env: LaunchEnv) -> CheckedInputs:
    """Every problem the config, the allocation and the eval task files show, in one error; then the data's files."""
    machine = probe_machine(job)
    choices = machine_choices(job, machine)
    gpus = torch.cuda.device_count() if choices.device == "cuda" and machine.cuda else None
    problems = allocation_problems(job.parallel, env, os.environ, gpus) + task_problems(job)
    return check_inputs(job, env.world_size, machine, problems)


def pretrain(
    job: JobConfig, run_dir: str, command_line: str = "", callbacks: Sequence[Callback] = (),
    objective: Optional[Objective] = None,
) -> TrainSummary:
    """Runs (or resumes) training up to `job.train.iters` on this process's share of the layout.

    Every input is checked before any process group exists and before anything is written to `run_dir`.
    `callbacks` run after the standard ones (training/callbacks/), every step. `objective`
    (training/objective.py; pretraining when None) is what the run trains on: post-training brings its own.
    """
    if not logging.getLogger(PACKAGE_LOGGER).handlers:
        setup_logging()  # called in-process (tests, notebooks) without an entry point's set-up
    env = read_launch_env()
    job = dataclasses.replace(job, tokenizer=job.tokenizer.with_absolute_paths())
    if objective is None and job.posttrain is not None:
        raise MegatronSotaError(
            f"posttrain.objective={job.posttrain.objective} is run by `python -m megatron_sota.posttrain` "
            "(megatron-sota-posttrain), not by the pretraining entry point"
        )
    objective = objective or Objective()
    inputs = check_before_process_groups(job, env)
    job = inputs.job_as_built(job)  # config.yaml and checkpoints record the tokenizer's vocabulary, which the model uses
    job = objective.prepare(job, inputs)  # its data checked and its derived values set, before anything is written
    if job.train.iters < 1:
        raise MegatronSotaError(f"train.iters={job.train.iters}: objective {objective.name} derived no steps (set train.iters)")
    save_dir = job.checkpoint.dir or os.path.join(run_dir, "checkpoints")
    refuse_foreign_checkpoints(save_dir, job.checkpoint.resume)
    resume_from = resolve_resume(job.checkpoint, save_dir)
    resume = plan_resume(job, resume_from) if resume_from else None
    init_from = None
    if resume_from is None and job.checkpoint.init_from:
        init_from = resolve_checkpoint_dir(job.checkpoint.init_from, "checkpoint.init_from")
    check_writable(save_dir, job.checkpoint, job.train.exit_duration_minutes)
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(job))
    if env.rank == 0:
        save_resolved_config(config_yaml, run_dir, command_line)
    with distributed_session(job.parallel, inputs.choices.device, job.runtime.timeout_minutes, job.train.seed, env) as session:
        state = build_training_state(job, inputs, session, run_dir, resume, objective)
        if env.rank == 0:
            report_data_mix(state, run_dir)
        num_params = _describe(state)
        manager = CheckpointManager(job.checkpoint, save_dir, state.inputs.tokenizer.vocab_size)
        layout = checkpoint_layout(job.parallel, state.layout.dp)
        if resume_from:
            progress = manager.load(state, resume_from, layout)
        elif init_from:
            progress = manager.load(state, init_from, layout, weights_only=True, fresh_keys=objective.fresh_keys)
        else:
            progress = Progress()
        state.start_data(progress.consumed_samples)
        objective.before_first_step(state, progress)
        if env.rank == 0 and progress.iteration:
            drop_rows_after(run_dir, progress.iteration)
        c = job.checkpoint
        duties = standard_callbacks(
            state,
            MetricsWriter(run_dir, env.rank == 0, job.logging.tensorboard, job.train.iters),
            BackgroundExporter(save_dir, c.export_hf_every, c.export_hf_dtype, manager.pinned, env.rank == 0),
            InLoopEvaluator(job.eval, state.models, state.inputs.tokenizer, job.model.max_position_embeddings, session.device),
            StopWatch(c.exit_on_signal, job.train.exit_duration_minutes, session.device),
        )
        trainer = Trainer(state, manager, layout, config_yaml, progress, [*duties, *callbacks, *fault_callbacks()])
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        summary.num_params = num_params
        if summary.losses:
            last = summary.first_step + len(summary.losses) - 1
            logger.info(
                f"{'stopped' if summary.exit_code else 'done'} at step {last}: {len(summary.losses)} steps in "
                f"{summary.wall_time_s:.1f}s; loss {summary.losses[0]:.4f} -> {summary.losses[-1]:.4f}; "
                f"{summary.tokens_per_s:,.0f} tokens/s"
                + (f"; {summary.stop_reason}: checkpoint saved, exit code {summary.exit_code}" if summary.exit_code else "")
            )
        return summary
