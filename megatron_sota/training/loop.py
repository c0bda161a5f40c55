"""The training loop as an object: the Trainer steps, and its callbacks do everything else a step calls for.

Health, metrics, validation, evaluation, exports, checkpoints and preemption are callbacks
(training/callbacks/); post-training brings its own objective (`forward_step`) or callbacks
(training/objective.py) instead of copying the loop. The Trainer must not know what any one callback does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from megatron_sota.checkpointing.manager import CheckpointManager, Progress
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.state import TrainingState
from megatron_sota.training.step import ForwardStep, StepResult, train_step


@dataclass
class TrainSummary:
    losses: List[float] = field(default_factory=list)
    """Per-step training loss of the steps this process ran (mean per token over the global batch)."""
    first_step: int = 1
    """The step losses[0] belongs to (> 1 after a resume)."""
    val_losses: List[float] = field(default_factory=list)
    val_metrics: List[Dict[str, float]] = field(default_factory=list)
    """The objective's other metrics at each validation (training/objective.py), in val_losses' order."""
    eval_metrics: Dict[int, Dict[str, float]] = field(default_factory=dict)
    """In-loop evaluation: step -> {"<task>/<metric>": value}."""
    tokens_per_s: float = 0.0
    """Mean throughput over the steps after the first (which includes warm-up)."""
    wall_time_s: float = 0.0
    num_params: int = 0
    exit_code: int = 0
    """0 when train.iters were reached, PREEMPTED_EXIT_CODE when stopped early after a save."""
    stop_reason: Optional[str] = None


@dataclass(frozen=True)
class StepOutcome:
    """What one step hands to the callbacks."""

    step: int
    result: StepResult
    seconds: float
    """Wall time of the step (device work included)."""


class Trainer:
    """Runs steps `progress.iteration + 1 .. train.iters`, calling every callback's hooks in list order.

    Every rank runs the same callbacks in the same order, so collectives inside them line up.
    """

    def __init__(
        self,
        state: TrainingState,
        checkpoints: CheckpointManager,
        checkpoint_layout: dict,
        config_yaml: str,
        progress: Progress,
        callbacks: Sequence[Callback] = (),
        forward_step: Optional[ForwardStep] = None,
    ):
        self.state = state
        self.checkpoints = checkpoints
        self.checkpoint_layout = checkpoint_layout
        self.config_yaml = config_yaml
        self.callbacks = list(callbacks)
        self.forward_step: ForwardStep = forward_step or state.objective.forward_step(state)
        """The objective of each step; a callback may swap it for a step (fault injection does)."""
        self.step = progress.iteration
        """The last step taken (during a step's hooks: that step)."""
        self.consumed_samples = progress.consumed_samples
        """Samples read so far, carried over from the checkpoint (its batch size may have differed)."""
        self.saved_at = progress.iteration
        self.summary = TrainSummary(first_step=progress.iteration + 1)

    @property
    def iters(self) -> int:
        return self.state.job.train.iters

    @property
    def is_last_step(self) -> bool:
        return self.step == self.iters

    @property
    def is_rank0(self) -> bool:
        return self.state.session.env.rank == 0

    def progress(self) -> Progress:
        return Progress(iteration=self.step, consumed_samples=self.consumed_samples)

    def save(self) -> None:
        """Saves a checkpoint of the current step, once: later calls in the same step do nothing."""
        if self.saved_at != self.step:
            self.checkpoints.save(self.state, self.progress(), self.config_yaml, self.checkpoint_layout)
            self.saved_at = self.step

    def stop(self, reason: str, exit_code: int) -> None:
        """Ends the run after this step's hooks (a callback that stops early runs last, after its save)."""
        self.summary.stop_reason, self.summary.exit_code = reason, exit_code

    def fit(self) -> TrainSummary:
        """Steps until train.iters or a stop; post_train runs only when the loop ends without an error."""
        start = time.perf_counter()
        timed_tokens, timed_seconds = 0, 0.0
        tokens_per_step = self.state.objective.tokens_per_step(self.state.job)
        for callback in self.callbacks:
            callback.pre_train(self)
        while self.step < self.iters and self.summary.stop_reason is None:
            self.step += 1
            for callback in self.callbacks:
                callback.pre_step(self)
            outcome = self._train_step()
            self.consumed_samples += self.state.job.train.global_batch_size
            self.summary.losses.append(outcome.result.loss)
            if self.step > self.summary.first_step:
                timed_tokens, timed_seconds = timed_tokens + tokens_per_step, timed_seconds + outcome.seconds
            for callback in self.callbacks:
                callback.post_step(self, outcome)
        self.summary.wall_time_s = time.perf_counter() - start
        self.summary.tokens_per_s = timed_tokens / timed_seconds if timed_seconds else 0.0
        for callback in self.callbacks:
            callback.post_train(self)
        return self.summary

    def close(self) -> None:
        """Every callback's close (also after an error), then the checkpoint writer's."""
        try:
            for callback in self.callbacks:
                callback.close(self)
        finally:
            self.checkpoints.close()

    def _train_step(self) -> StepOutcome:
        state, t = self.state, self.state.job.train
        device = state.session.device
        start = time.perf_counter()
        before = state.objective.before_step(state, self.step)
        result = train_step(
            state.models, state.optimizer, state.scheduler, state.train_iterators,
            state.layout.num_microbatches, t.micro_batch_size * state.objective.rows_per_sample, t.seq_length, device,
            forward_step=self.forward_step, metric_names=state.objective.metric_names,
        )
        result.metrics.update(before)
        result.metrics.update(state.objective.after_step(state, self.step))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return StepOutcome(step=self.step, result=result, seconds=time.perf_counter() - start)
