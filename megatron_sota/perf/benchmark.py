"""Times the trainer's own step on any preset and layout: tokens/s, TFLOP/s, MFU, memory, phases.

The steps timed are `training.step.train_step`, the same code a run executes, on the same model,
optimizer and data loader (mock data unless shards are given). Works on CPU (gloo) and GPU, alone
or under torchrun/srun; rank 0 returns the result.

FLOPs per token (``model.param_count.train_flops_per_token``): 6·N + 12·L·H·s, where N counts
matmul parameters (all but the input embedding and the norms; the output projection counts) and
H = heads·head_dim. That attention term is "full" attention (every query sees all s keys), the
convention of the GPU baseline and of most MFU reports; the kernels compute the causal half, so
"causal" figures use 6·N + 6·L·H·s. Full recompute does extra work that MFU does not count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.model.param_count import train_flops_per_token
from megatron_sota.perf.memory_meter import PeakMemoryMeter
from megatron_sota.runtime.gpus import peak_flops_per_device
from megatron_sota.runtime.phase_timer import PhaseTimer, TimedIterator
from megatron_sota.runtime.launch_env import read_launch_env
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.state import build_training_state, check_inputs
from megatron_sota.training.step import eval_step, next_token_loss, train_step

FLOP_FORMULA = "6*N + 12*L*H*s per token (full attention); causal: 6*N + 6*L*H*s; N = matmul params incl. output layer"


@dataclass(frozen=True)
class BenchmarkOptions:
    steps: int = 10
    """Timed training steps."""
    warmup: int = 3
    """Untimed steps first (compilation, allocator warm-up, optimizer state creation); at least 2,
    so that the steady state (optimizer states allocated) is reached before timing."""
    peak_tflops: Optional[float] = None
    """Peak dense TFLOP/s per device for MFU; default: known GPUs' bf16 peak, none on CPU."""
    forward_passes: bool = True
    """Also time forward-only passes over as many batches, to split forward from backward."""
    measure_cpu_memory: bool = True
    """CPU has no allocator statistics: count live tensor storages during build and warm-up
    (slower warm-up; the timed steps run without it)."""
    run_dir: str = os.path.join("outputs", "benchmark")
    """Only the datasets' index cache is written here; every rank must see the same folder."""


@dataclass
class BenchmarkResult:
    model: str
    device: str
    layout: Dict[str, object]
    steps: int
    warmup: int
    tokens_per_step: int
    step_time_s: float
    """Mean over the timed steps (the slowest rank's)."""
    step_times_s: List[float]
    """Wall time of each timed step, measured around the whole step (the phases lie inside it)."""
    tokens_per_s: float
    tokens_per_s_per_device: float
    flops_per_token: float
    flops_per_token_causal: float
    tflops_per_device: float
    tflops_per_device_causal: float
    peak_tflops: Optional[float]
    mfu: Optional[float]
    mfu_causal: Optional[float]
    peak_memory_gib: Optional[float]
    """Largest over ranks. GPU: allocator peak over the whole run; CPU: live tensors during build and warm-up."""
    breakdown_s: Dict[str, float]
    """Mean seconds per step: forward, backward, optimizer, zero_grad, data (inside forward)."""
    losses: List[float] = field(default_factory=list)
    """Every step's loss, warm-up first: variants of one run are compared on these."""
    flop_formula: str = FLOP_FORMULA


def _prepare(job: JobConfig, options: BenchmarkOptions) -> JobConfig:
    if options.warmup < 2:
        raise ValueError(f"warmup={options.warmup}: at least 2 steps are needed to reach the steady state")
    passes = options.warmup + options.steps * (2 if options.forward_passes else 1)
    # Enough samples for every pass; no validation split, no checkpoints, no in-loop evaluation.
    train = dataclasses.replace(job.train, iters=passes, eval_interval=0)
    return dataclasses.replace(job, train=train)


def _layout(job: JobConfig, dp: int, world: int, microbatches: int, dtype: str, use_te: bool, fusions: str) -> Dict[str, object]:
    p, t = job.parallel, job.train
    return dict(
        world_size=world, tp=p.tp, pp=p.pp, vpp=p.virtual_stages, cp=p.cp, dp=dp, sp=p.sp,
        distributed_optimizer=p.distributed_optimizer, micro_batch_size=t.micro_batch_size,
        global_batch_size=t.global_batch_size, num_microbatches=microbatches, seq_length=t.seq_length,
        recompute=t.recompute, dtype=dtype, kernels="transformer_engine" if use_te else "local",
        fusions=fusions,
    )


def _max_over_ranks(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def run_benchmark(job: JobConfig, options: BenchmarkOptions = BenchmarkOptions()) -> Optional[BenchmarkResult]:
    """Builds the run's training state, steps it, returns the timings on rank 0 (None elsewhere)."""
    job = _prepare(job, options)
    env = read_launch_env()
    inputs = check_inputs(job, env.world_size)
    t = job.train
    with distributed_session(job.parallel, inputs.choices.device, job.runtime.timeout_minutes, t.seed, env) as session:
        device = session.device
        meter = PeakMemoryMeter(device)
        counting = device.type == "cuda" or options.measure_cpu_memory
        with meter if counting else contextlib.nullcontext():
            state = build_training_state(job, inputs, session, options.run_dir)
            state.start_data(0)
            data_seconds: Dict[str, float] = {}
            state.train_iterators = [TimedIterator(it, data_seconds) for it in state.train_iterators]
            losses = [_step(state, None).loss for _ in range(options.warmup)]
        data_seconds.clear()
        step_times, breakdown = _timed_steps(state, options.steps, losses)
        breakdown["data"] = data_seconds.get("data", 0.0) / options.steps
        if options.forward_passes:
            breakdown["forward"] = _forward_seconds(state, options.steps)
            breakdown["backward"] = breakdown["forward_backward"] - breakdown["forward"]
        peak_bytes = meter.peak_bytes if counting else None
        if peak_bytes is not None:
            peak_bytes = _max_over_ranks(peak_bytes, device)
        step_time = statistics.fmean(step_times)
        mean_step = _max_over_ranks(step_time, device)  # the slowest rank sets the pace
        if env.rank != 0:
            return None
        tokens = t.global_batch_size * t.seq_length
        full = train_flops_per_token(job.model, inputs.padded_vocab, t.seq_length)
        causal = train_flops_per_token(job.model, inputs.padded_vocab, t.seq_length, causal=True)
        world = inputs.layout.world_size
        tflops = tokens * full / mean_step / world / 1e12
        tflops_causal = tokens * causal / mean_step / world / 1e12
        peak = options.peak_tflops
        if peak is None:
            known = peak_flops_per_device(device)
            peak = known / 1e12 if known else None
        return BenchmarkResult(
            model=job.model.name,
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            layout=_layout(job, inputs.layout.dp, world, inputs.layout.num_microbatches,
                           str(state.config.params_dtype).replace("torch.", ""), inputs.choices.transformer_engine,
                           state.kernels.describe()),
            steps=options.steps,
            warmup=options.warmup,
            tokens_per_step=tokens,
            step_time_s=mean_step,
            step_times_s=step_times,
            tokens_per_s=tokens / mean_step,
            tokens_per_s_per_device=tokens / mean_step / world,
            flops_per_token=full,
            flops_per_token_causal=causal,
            tflops_per_device=tflops,
            tflops_per_device_causal=tflops_causal,
            peak_tflops=peak,
            mfu=tflops / peak if peak else None,
            mfu_causal=tflops_causal / peak if peak else None,
            peak_memory_gib=peak_bytes / 2**30 if peak_bytes is not None else None,
            breakdown_s=breakdown,
            losses=losses,
        )


def _timed_steps(state, steps: int, losses: List[float]) -> tuple[List[float], Dict[str, float]]:
    """Each step's wall time, and the mean seconds per step of each phase; appends the losses.

    The step is timed on its own clock, not as the sum of its phases, so that time outside every
    phase would show as a gap. The phases synchronise the device at their ends: the step's device
    work is done when its last phase ends, and the previous step's was done before it started.
    """
    timer = PhaseTimer(state.session.device)
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(_step(state, timer).loss)
        step_times.append(time.perf_counter() - start)
    return step_times, {name: seconds / steps for name, seconds in timer.seconds.items()}


def _forward_seconds(state, passes: int) -> float:
    """Mean seconds of a forward-only pass over a global batch (the next batches of the loader)."""
    t = state.job.train
    timer = PhaseTimer(state.session.device)
    for _ in range(passes):
        with timer.phase("forward"):
            eval_step(state.models, state.train_iterators, state.layout.num_microbatches,
                      t.micro_batch_size, t.seq_length, state.session.device,
                      next_token_loss(state.session.device, state.document_eod))
    return timer.seconds["forward"] / passes


def _step(state, timer: Optional[PhaseTimer]):
    t = state.job.train
    return train_step(
        state.models, state.optimizer, state.scheduler, state.train_iterators,
        state.layout.num_microbatches, t.micro_batch_size, t.seq_length, state.session.device, timer=timer,
        forward_step=next_token_loss(state.session.device, state.document_eod),
    )


def format_result(result: BenchmarkResult) -> str:
    """A human-readable summary: one line of headline numbers, the layout, and the phase breakdown."""
    lay = result.layout
    mfu = f"{result.mfu * 100:.1f}% (causal {result.mfu_causal * 100:.1f}%)" if result.mfu is not None else "n/a (no peak known)"
    memory = f"{result.peak_memory_gib:.2f} GiB" if result.peak_memory_gib is not None else "n/a"
    phases = "  ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in sorted(result.breakdown_s.items()))
    return "\n".join([
        f"benchmark {result.model} on {result.device}: {result.steps} steps after {result.warmup} warm-up",
        f"layout: world {lay['world_size']} = tp {lay['tp']} x pp {lay['pp']} x cp {lay['cp']} x dp {lay['dp']}, "
        f"vpp {lay['vpp']}, sp {lay['sp']}, mbs {lay['micro_batch_size']} x {lay['num_microbatches']} micro-batches, "
        f"seq {lay['seq_length']}, recompute {lay['recompute']}, {lay['dtype']}, {lay['kernels']} kernels ({lay['fusions']})",
        f"step {result.step_time_s * 1000:.1f} ms | {result.tokens_per_s:,.0f} tokens/s "
        f"({result.tokens_per_s_per_device:,.0f} per device) | {result.tflops_per_device:.2f} TFLOP/s per device "
        f"(causal {result.tflops_per_device_causal:.2f}) | MFU {mfu} | peak memory {memory}",
        f"per step: {phases}",
        f"FLOPs/token {result.flops_per_token:.4g} ({result.flop_formula})",
    ])
