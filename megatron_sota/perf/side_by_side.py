"""This project's training step and transformers' on the same shape, batch, dtype and optimizer, in one run.

`tools/benchmark.py --compare-hf` (one process): the trainer's own step (perf/benchmark.py's, the code a run
executes) and perf/hf_baseline.py's LlamaForCausalLM step, which runs in a spawned process of its own. After the
warm-up steps of each, `rounds` rounds of `steps` steps each alternate between the two, the side that goes first
alternating too, so that a machine's drift (thermal, other load) reaches both; each side's step time is the median
of its steps, and the headline ratio is the median of the rounds' ratios of tokens/s (ours / transformers).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import List

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.perf.benchmark import BenchmarkOptions, _prepare, _step, _timed_steps
from megatron_sota.perf.hf_baseline import HFProcess, spec_for
from megatron_sota.runtime.launch_env import read_launch_env
from megatron_sota.runtime.session import distributed_session
from megatron_sota.training.state import build_training_state, check_inputs


@dataclass
class SideBySideResult:
    model: str
    device: str
    dtype: str
    kernels: str
    """The trainer's kernel choice (KernelChoice.describe)."""
    hf_adam: str
    """transformers' side's AdamW implementation, the trainer's: "fused" with kernels.fused_adam, else "default"."""
    tokens_per_step: int
    rounds: int
    steps_per_round: int
    ours_step_times_s: List[float]
    hf_step_times_s: List[float]
    ours_tokens_per_s: float
    """tokens_per_step / the median of our timed steps."""
    hf_tokens_per_s: float
    round_ratios: List[float] = field(default_factory=list)
    """Each round's ours / transformers tokens/s (medians of the round's steps)."""
    ratio: float = 0.0
    """The median of round_ratios: above 1, this project trains faster."""


def run_side_by_side(job: JobConfig, options: BenchmarkOptions, rounds: int) -> SideBySideResult:
    """Times both sides alternating; one process only (transformers' side has no model parallelism here)."""
    if rounds < 1:
        raise MegatronSotaError(f"--rounds must be >= 1, got {rounds}")
    env = read_launch_env()
    if env.world_size != 1:
        raise MegatronSotaError(f"--compare-hf runs on one process (world size 1); this launch has {env.world_size} ranks")
    job = _prepare(job, dataclasses.replace(options, steps=options.steps * rounds, forward_passes=False))
    inputs = check_inputs(job, 1)
    t = job.train
    with distributed_session(job.parallel, inputs.choices.device, job.runtime.timeout_minutes, t.seed, env) as session:
        state = build_training_state(job, inputs, session, options.run_dir)
        state.start_data(0)
        spec = spec_for(job, inputs.padded_vocab, session.device, state.config.params_dtype,
                        inputs.layout.num_microbatches, state.kernels.fused_adam)
        kernels = state.kernels.describe()
        with HFProcess(spec) as hf:
            for _ in range(options.warmup):
                _step(state, None)
            hf.run(options.warmup)
            ours: List[List[float]] = []
            theirs: List[List[float]] = []
            for index in range(rounds):
                if index % 2 == 0:
                    ours.append(_timed(state, options.steps))
                    theirs.append(hf.run(options.steps))
                else:
                    theirs.append(hf.run(options.steps))
                    ours.append(_timed(state, options.steps))
    tokens = t.global_batch_size * t.seq_length
    ratios = [statistics.median(h) / statistics.median(o) for o, h in zip(ours, theirs)]
    ours_all = [s for r in ours for s in r]
    theirs_all = [s for r in theirs for s in r]
    return SideBySideResult(
        model=job.model.name, device=spec.device, dtype=spec.dtype, kernels=kernels,
        hf_adam="fused" if spec.fused_adam else "default", tokens_per_step=tokens, rounds=rounds,
        steps_per_round=options.steps, ours_step_times_s=ours_all, hf_step_times_s=theirs_all,
        ours_tokens_per_s=tokens / statistics.median(ours_all), hf_tokens_per_s=tokens / statistics.median(theirs_all),
        round_ratios=ratios, ratio=statistics.median(ratios),
    )


def _timed(state, steps: int) -> List[float]:
    """Wall seconds of each of `steps` trainer steps: the benchmark's own timing (its phases synchronise the device)."""
    return _timed_steps(state, steps, [])[0]


def format_side_by_side(result: SideBySideResult) -> str:
    ours_ms = statistics.median(result.ours_step_times_s) * 1000
    hf_ms = statistics.median(result.hf_step_times_s) * 1000
    rounds = " ".join(f"{r:.3f}" for r in result.round_ratios)
    return "\n".join([
        f"side by side: {result.model} on {result.device}, {result.dtype}, {result.tokens_per_step} tokens per step, "
        f"{result.rounds} alternating rounds of {result.steps_per_round} steps",
        f"megatron_sota  step {ours_ms:.1f} ms | {result.ours_tokens_per_s:,.1f} tokens/s  ({result.kernels})",
        f"transformers   step {hf_ms:.1f} ms | {result.hf_tokens_per_s:,.1f} tokens/s  (LlamaForCausalLM, sdpa, "
        f"{result.hf_adam} AdamW)",
        f"ratio {result.ratio:.3f}x transformers (median of the rounds: {rounds})",
    ])
