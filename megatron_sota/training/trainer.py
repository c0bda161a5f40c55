"""The pretraining loop: checks inputs, resumes, steps, validates, logs, saves and stops cleanly.

Callable in-process (tests, notebooks) as well as from the Hydra entry point; it never
parses command lines and reads no global state but the launcher's environment.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from omegaconf import OmegaConf

from megatron_sota.checkpointing import paths
from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout, resolve_resume
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.job import JobConfig
from megatron_sota.data.blend import sample_counts
from megatron_sota.data.mix_report import data_mix_report, format_data_mix, write_data_mix
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.param_count import count_params, format_count, train_flops_per_token
from megatron_sota.runtime.allocation import check_allocation
from megatron_sota.runtime.launch_env import read_launch_env
from megatron_sota.runtime.session import distributed_session, resolve_device
from megatron_sota.training.fault_injection import FaultPlan, read_fault_plan
from megatron_sota.training.health import LossHealth
from megatron_sota.training.hf_export import BackgroundExporter
from megatron_sota.training.in_loop_eval import InLoopEvaluator
from megatron_sota.training.metrics import (
    MetricsWriter,
    StepMetrics,
    drop_rows_after,
    memory_gib,
    peak_flops_per_device,
)
from megatron_sota.training.preemption import PREEMPTED_EXIT_CODE, StopWatch
from megatron_sota.training.state import TrainingState, build_training_state, check_inputs
from megatron_sota.training.step import eval_step, train_step


@dataclass
class TrainSummary:
    losses: List[float] = field(default_factory=list)
    """Per-step training loss of the steps this process ran (mean per token over the global batch)."""
    first_step: int = 1
    """The step losses[0] belongs to (> 1 after a resume)."""
    val_losses: List[float] = field(default_factory=list)
    eval_metrics: Dict[int, Dict[str, float]] = field(default_factory=dict)
    """In-loop evaluation: step -> {"<task>/<metric>": value}."""
    tokens_per_s: float = 0.0
    """Mean throughput over the steps after the first (which includes warm-up)."""
    wall_time_s: float = 0.0
    num_params: int = 0
    exit_code: int = 0
    """0 when train.iters were reached, PREEMPTED_EXIT_CODE when stopped early after a save."""
    stop_reason: Optional[str] = None


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


def print_rank0(*args) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(*args, flush=True)


def save_resolved_config(text: str, run_dir: str, command_line: str) -> None:
    """Prints the resolved config (YAML) and writes it to <run_dir>/config.yaml."""
    print(f"resolved config (run dir {run_dir}):\n{text}", flush=True)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as handle:
        handle.write(f"# {command_line}\n{text}" if command_line else text)


def _describe(state: TrainingState) -> int:
    job, layout = state.job, state.layout
    counts = count_params(job.model, state.inputs.padded_vocab, job.parallel.pp)
    stages = ", ".join(f"stage {i}: {n:,} ({format_count(n)})" for i, n in enumerate(counts.per_stage))
    print_rank0(
        f"model {job.model.name}: {counts.total:,} parameters ({format_count(counts.total)}); "
        f"non-embedding {counts.non_embedding:,}; per pipeline stage: {stages}\n"
        f"layout: world {layout.world_size} = tp {job.parallel.tp} x pp {job.parallel.pp} x cp {job.parallel.cp} "
        f"x dp {layout.dp}; vpp {job.parallel.virtual_stages}; sp {job.parallel.sp}; "
        f"{layout.num_microbatches} micro-batches of {job.train.micro_batch_size} per step; "
        f"kernels: {'Transformer Engine' if state.use_te else 'local + SDPA'} ({state.kernels.describe()}); "
        f"vocab {state.inputs.tokenizer.vocab_size} padded to {state.inputs.padded_vocab}"
    )
    return counts.total


def report_data_mix(state: TrainingState, run_dir: str) -> None:
    """Prints the samples each source and prefix contributes to this run; saves data_mix.json/.png."""
    blend, t = state.inputs.blend, state.job.train
    if blend is None:
        return  # mock data
    counts = sample_counts(t.iters, t.global_batch_size, t.eval_iters)
    splits = {"train": (state.train_dataset, counts.train)}
    if t.eval_interval > 0:
        splits["valid"] = (state.valid_dataset, counts.valid)
    report = data_mix_report(blend, splits, t.seq_length)
    print(format_data_mix(report), flush=True)
    write_data_mix(report, run_dir)


def pretrain(job: JobConfig, run_dir: str, command_line: str = "") -> TrainSummary:
    """Runs (or resumes) training up to `job.train.iters` on this process's share of the layout.

    Every input is checked before anything is written to `run_dir`.
    """
    env = read_launch_env()
    device = resolve_device(job.runtime.device)
    check_allocation(job.parallel, env, os.environ, torch.cuda.device_count() if device.type == "cuda" else None)
    job = dataclasses.replace(job, tokenizer=job.tokenizer.with_absolute_paths())
    inputs = check_inputs(job, env.world_size)
    save_dir = job.checkpoint.dir or os.path.join(run_dir, "checkpoints")
    refuse_foreign_checkpoints(save_dir, job.checkpoint.resume)
    resume_from = resolve_resume(job.checkpoint, save_dir)
    init_from = None
    if resume_from is None and job.checkpoint.init_from:
        init_from = resolve_checkpoint_dir(job.checkpoint.init_from, "checkpoint.init_from")
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(job))
    if env.rank == 0:
        save_resolved_config(config_yaml, run_dir, command_line)
    faults = read_fault_plan()
    with distributed_session(job.parallel, job.runtime.device, job.runtime.timeout_minutes, job.train.seed, env) as session:
        state = build_training_state(job, inputs, session, run_dir)
        if env.rank == 0:
            report_data_mix(state, run_dir)
        summary = TrainSummary(num_params=_describe(state))
        manager = CheckpointManager(job.checkpoint, save_dir, state.inputs.tokenizer.vocab_size, faults.kill_during_save_at)
        layout = checkpoint_layout(job.parallel, state.layout.dp)
        if resume_from:
            progress = manager.load(state, resume_from, layout)
        elif init_from:
            progress = manager.load(state, init_from, layout, weights_only=True)
        else:
            progress = Progress()
        state.start_data(progress.consumed_samples)
        if env.rank == 0 and progress.iteration:
            drop_rows_after(run_dir, progress.iteration)
        writer = MetricsWriter(run_dir, env.rank == 0, job.logging.tensorboard, job.train.iters)
        watch = StopWatch(job.checkpoint.exit_on_signal, job.train.exit_duration_minutes, session.device)
        c = job.checkpoint
        exporter = BackgroundExporter(save_dir, c.export_hf_every, c.export_hf_dtype, manager.pinned, env.rank == 0)
        evaluator = InLoopEvaluator(job.eval, state.models, state.inputs.tokenizer, job.model.max_position_embeddings, session.device)
        try:
            _loop(state, progress, manager, exporter, evaluator, writer, watch, faults, summary, config_yaml, layout)
        finally:
            watch.restore()
            writer.close()
            manager.close()
        # A preempted job has seconds left: it does not wait for exports still running.
        exporter.close(wait=summary.exit_code == 0)
        if summary.losses:
            last = summary.first_step + len(summary.losses) - 1
            print_rank0(
                f"{'stopped' if summary.exit_code else 'done'} at step {last}: {len(summary.losses)} steps in "
                f"{summary.wall_time_s:.1f}s; loss {summary.losses[0]:.4f} -> {summary.losses[-1]:.4f}; "
                f"{summary.tokens_per_s:,.0f} tokens/s"
                + (f"; {summary.stop_reason}: checkpoint saved, exit code {summary.exit_code}" if summary.exit_code else "")
            )
        return summary


def _loop(
    state: TrainingState, progress: Progress, manager: CheckpointManager, exporter: BackgroundExporter,
    evaluator: InLoopEvaluator, writer: MetricsWriter, watch: StopWatch, faults: FaultPlan, summary: TrainSummary, config_yaml: str, layout: dict,
) -> None:
    job, device = state.job, state.session.device
    t = job.train
    tokens_per_step = t.global_batch_size * t.seq_length
    flops_per_step = train_flops_per_token(job.model, state.inputs.padded_vocab, t.seq_length) * tokens_per_step
    peak = peak_flops_per_device(device)
    health = LossHealth(t.max_skipped_steps, t.loss_spike_factor)
    timed_tokens, timed_seconds = 0, 0.0
    start = time.perf_counter()
    summary.first_step = progress.iteration + 1
    step, saved_at = progress.iteration, progress.iteration
    while step < t.iters:
        step += 1
        step_start = time.perf_counter()
        result = train_step(
            state.models, state.optimizer, state.scheduler, state.train_iterators,
            state.layout.num_microbatches, t.micro_batch_size, t.seq_length, device,
            poison=step in faults.nan_loss_steps,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - step_start
        summary.losses.append(result.loss)
        if step > summary.first_step:
            timed_tokens, timed_seconds = timed_tokens + tokens_per_step, timed_seconds + elapsed
        if result.skip_reason == "non-finite":
            print_rank0(health.record_skip(step, result.loss, result.grad_norm, manager.last_complete))
        elif not result.skipped:
            spike = health.record_update(step, result.loss)
            if spike:
                print_rank0(spike)
        if step == summary.first_step or step % job.logging.interval == 0 or step == t.iters:
            done = step - summary.first_step + 1
            writer.log_train(
                StepMetrics(
                    step=step,
                    loss=result.loss,
                    lr=state.scheduler.get_lr(state.optimizer.param_groups[0]),
                    grad_norm=result.grad_norm,
                    tokens_per_s=tokens_per_step / elapsed,
                    step_time_s=elapsed,
                    consumed_samples=step * t.global_batch_size,
                    mfu=(flops_per_step / elapsed / state.layout.world_size / peak) if peak else None,
                    memory_gib=memory_gib(device),
                    loss_scale=state.optimizer.get_loss_scale().item() if state.config.fp16 else None,
                    skipped=result.skipped,
                    eta_s=(time.perf_counter() - start) / done * (t.iters - step),
                )
            )
        manager.poll()
        exporter.poll()
        if state.valid_dataset is not None and t.eval_interval > 0 and (step % t.eval_interval == 0 or step == t.iters):
            summary.val_losses.append(validate(state, writer, step))
        if evaluator.due(step, last=step == t.iters):
            values, warnings, seconds = evaluator.run()
            writer.log_eval(step, values, seconds)
            summary.eval_metrics[step] = values
            for warning in warnings:
                print_rank0(f"warning: {warning}")
        current = Progress(iteration=step, consumed_samples=step * t.global_batch_size)
        export_now = exporter.due(step, last=step == t.iters)
        if (job.checkpoint.interval > 0 and step % job.checkpoint.interval == 0) or export_now:
            manager.save(state, current, config_yaml, layout)
            saved_at = step
        if export_now:
            manager.wait_for_pending()  # the export reads the finished checkpoint
            exporter.start(step)
        stop = "stop signal (fault injection)" if faults.preempt_at == step else watch.reason()
        if stop is not None and step < t.iters:
            if saved_at != step:
                manager.save(state, current, config_yaml, layout)
                saved_at = step
            summary.exit_code, summary.stop_reason = PREEMPTED_EXIT_CODE, stop
            break
    if job.checkpoint.save_at_end and saved_at != step:
        manager.save(state, Progress(iteration=step, consumed_samples=step * t.global_batch_size), config_yaml, layout)
    summary.wall_time_s = time.perf_counter() - start
    summary.tokens_per_s = timed_tokens / timed_seconds if timed_seconds else 0.0


def validate(state: TrainingState, writer: MetricsWriter, step: int) -> float:
    """Token-weighted mean loss over the first `train.eval_iters` global batches of the validation split."""
    t = state.job.train
    iterators = state.valid_iterators()
    total, weight = 0.0, 0
    for _ in range(t.eval_iters):
        result = eval_step(
            state.models, iterators, state.layout.num_microbatches,
            t.micro_batch_size, t.seq_length, state.session.device,
        )
        total += result.loss * result.num_tokens
        weight += result.num_tokens
    loss = total / max(weight, 1)
    writer.log_validation(step, loss)
    return loss
