"""The pretraining loop: checks inputs, builds the training state, steps, validates and logs.

Callable in-process (tests, notebooks) as well as from the Hydra entry point; it never
parses command lines and reads no global state but the launcher's environment.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from typing import List

import torch
from omegaconf import OmegaConf

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.model.param_count import count_params, format_count, train_flops_per_token
from megatron_sota.runtime.launch_env import read_launch_env
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.metrics import MetricsWriter, StepMetrics, memory_gib, peak_flops_per_device
from megatron_sota.training.state import TrainingState, build_training_state, check_inputs
from megatron_sota.training.step import eval_step, train_step


@dataclass
class TrainSummary:
    losses: List[float] = field(default_factory=list)
    """Per-step training loss (mean per token over the global batch)."""
    val_losses: List[float] = field(default_factory=list)
    tokens_per_s: float = 0.0
    """Mean throughput over the steps after the first (which includes warm-up)."""
    wall_time_s: float = 0.0
    num_params: int = 0


def refuse_foreign_checkpoints(save_dir: str, resume: bool) -> None:
    """A run directory holding another run's checkpoints is not written to unless resuming."""
    if not os.path.isdir(save_dir):
        return
    found = sorted(glob.glob(os.path.join(save_dir, "iter_*")) + glob.glob(os.path.join(save_dir, "latest_*")))
    if not found:
        return
    if not resume:
        raise MegatronSotaError(
            f"checkpoint.save={save_dir} already holds checkpoints ({os.path.basename(found[-1])}): "
            "set checkpoint.resume=true to continue that run, or choose another hydra.run.dir"
        )
    # Loading arrives with distributed checkpointing; until then refuse rather than silently
    # start from scratch beside the old run's checkpoints.
    raise MegatronSotaError(
        f"checkpoint.resume=true but this version cannot load checkpoints yet ({save_dir}); "
        "choose another hydra.run.dir to start a new run"
    )


def print_rank0(*args) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(*args, flush=True)


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
        f"kernels: {'Transformer Engine' if state.use_te else 'local + SDPA'}; "
        f"vocab {state.inputs.tokenizer.vocab_size} padded to {state.inputs.padded_vocab}"
    )
    return counts.total


def save_resolved_config(job: JobConfig, run_dir: str, command_line: str) -> None:
    """Prints the resolved config and writes it to <run_dir>/config.yaml (rank 0 only)."""
    text = OmegaConf.to_yaml(OmegaConf.structured(job))
    print(f"resolved config (run dir {run_dir}):\n{text}", flush=True)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as handle:
        handle.write(f"# {command_line}\n{text}" if command_line else text)


def pretrain(job: JobConfig, run_dir: str, command_line: str = "") -> TrainSummary:
    """Runs `job.train.iters` steps on this process's share of the layout; returns the losses.

    Every input is checked before anything is written to `run_dir`.
    """
    env = read_launch_env()
    inputs = check_inputs(job, env.world_size)
    refuse_foreign_checkpoints(job.checkpoint.save or os.path.join(run_dir, "checkpoints"), job.checkpoint.resume)
    if env.rank == 0:
        save_resolved_config(job, run_dir, command_line)
    t = job.train
    with distributed_session(job.parallel, job.runtime.device, job.runtime.timeout_minutes, t.seed, env) as session:
        state = build_training_state(job, inputs, session, run_dir)
        summary = TrainSummary(num_params=_describe(state))
        writer = MetricsWriter(run_dir, env.rank == 0, job.logging.tensorboard, t.iters)
        try:
            _loop(state, writer, summary)
        finally:
            writer.close()
        print_rank0(
            f"done: {t.iters} steps in {summary.wall_time_s:.1f}s; loss {summary.losses[0]:.4f} -> "
            f"{summary.losses[-1]:.4f}; {summary.tokens_per_s:,.0f} tokens/s (mean of steps 2..{t.iters})"
        )
        return summary


def _loop(state: TrainingState, writer: MetricsWriter, summary: TrainSummary) -> None:
    job, layout, device = state.job, state.layout, state.session.device
    t = job.train
    tokens_per_step = t.global_batch_size * t.seq_length
    flops_per_step = train_flops_per_token(job.model, state.inputs.padded_vocab, t.seq_length) * tokens_per_step
    peak = peak_flops_per_device(device)
    timed_tokens, timed_seconds = 0, 0.0
    start = time.perf_counter()
    for step in range(1, t.iters + 1):
        step_start = time.perf_counter()
        result = train_step(
            state.models, state.optimizer, state.scheduler, state.train_iterators,
            layout.num_microbatches, t.micro_batch_size, t.seq_length, device,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - step_start
        summary.losses.append(result.loss)
        if step > 1:
            timed_tokens, timed_seconds = timed_tokens + tokens_per_step, timed_seconds + elapsed
        if step == 1 or step % job.logging.interval == 0 or step == t.iters:
            writer.log_train(
                StepMetrics(
                    step=step,
                    loss=result.loss,
                    lr=state.scheduler.get_lr(state.optimizer.param_groups[0]),
                    grad_norm=result.grad_norm,
                    tokens_per_s=tokens_per_step / elapsed,
                    step_time_s=elapsed,
                    consumed_samples=step * t.global_batch_size,
                    mfu=(flops_per_step / elapsed / layout.world_size / peak) if peak else None,
                    memory_gib=memory_gib(device),
                    loss_scale=state.optimizer.get_loss_scale().item() if state.config.fp16 else None,
                    skipped=result.skipped,
                    eta_s=(time.perf_counter() - start) / step * (t.iters - step),
                )
            )
        if state.valid_iterators and t.eval_interval > 0 and (step % t.eval_interval == 0 or step == t.iters):
            summary.val_losses.append(validate(state, writer, step))
    summary.wall_time_s = time.perf_counter() - start
    summary.tokens_per_s = timed_tokens / timed_seconds if timed_seconds else 0.0


def validate(state: TrainingState, writer: MetricsWriter, step: int) -> float:
    """Token-weighted mean loss over `train.eval_iters` validation global batches."""
    t = state.job.train
    total, weight = 0.0, 0
    for _ in range(t.eval_iters):
        result = eval_step(
            state.models, state.valid_iterators, state.layout.num_microbatches,
            t.micro_batch_size, t.seq_length, state.session.device,
        )
        total += result.loss * result.num_tokens
        weight += result.num_tokens
    loss = total / max(weight, 1)
    writer.log_validation(step, loss)
    return loss
