"""The loop is extended from outside: a callback sees every step's outcome, can swap the objective and stop the run."""

from __future__ import annotations

import math

from megatron_sota.config.job import JobConfig
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.trainer import pretrain


class Recorder(Callback):
    """Records the hooks in order; doubles the loss of step 2 through the objective; stops after step 3."""

    def __init__(self):
        self.calls = []
        self.losses = {}
        self._objective = None

    def pre_train(self, trainer):
        self.calls.append(("pre_train", trainer.step))

    def pre_step(self, trainer):
        self.calls.append(("pre_step", trainer.step))
        if trainer.step == 2:
            self._objective = objective = trainer.forward_step

            def doubled(data_iterator, model):
                output, loss_func = objective(data_iterator, model)
                return output, lambda out: loss_func(out * 2.0)

            trainer.forward_step = doubled

    def post_step(self, trainer, outcome):
        self.calls.append(("post_step", outcome.step))
        self.losses[outcome.step] = outcome.result.loss
        if self._objective is not None:
            trainer.forward_step, self._objective = self._objective, None
        if outcome.step == 3:
            trainer.stop("enough for this test", 0)

    def post_train(self, trainer):
        self.calls.append(("post_train", trainer.step))

    def close(self, trainer):
        self.calls.append(("close", trainer.step))


def _job() -> JobConfig:
    job = JobConfig()
    job.data.mock = True
    job.data.num_workers = 0
    job.runtime.device = "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 2, 4
    job.train.iters, job.train.eval_interval = 6, 0
    job.logging.tensorboard = False
    job.checkpoint.save_at_end = False
    return job


def test_a_callback_from_outside_sees_each_step_swaps_the_objective_and_stops_the_run(tmp_path):
    recorder = Recorder()
    summary = pretrain(_job(), str(tmp_path / "run"), callbacks=[recorder])
    assert recorder.calls == [
        ("pre_train", 0),
        ("pre_step", 1), ("post_step", 1),
        ("pre_step", 2), ("post_step", 2),
        ("pre_step", 3), ("post_step", 3),
        ("post_train", 3), ("close", 3),
    ]
    assert summary.losses == [recorder.losses[step] for step in (1, 2, 3)]
    assert (summary.stop_reason, summary.exit_code) == ("enough for this test", 0)
    # Step 2 ran with the doubled objective: twice the loss of an untouched step, near the first's.
    assert math.isclose(summary.losses[1] / 2, summary.losses[0], rel_tol=0.05)
    assert math.isclose(summary.losses[2], summary.losses[0], rel_tol=0.05)
