"""checkpoint.init_from in bf16: the optimizer's fp32 main copies are made from the weights it was built with, so they
must be refreshed from the loaded weights, or the first step writes the initialisation back over them."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.config.job import JobConfig
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.trainer import pretrain

pytestmark = pytest.mark.slow


class FinalWeights(Callback):
    def post_train(self, trainer):
        self.weights = {k: v.detach().clone() for k, v in unwrap(trainer.state.models[0]).state_dict().items()
                        if isinstance(v, torch.Tensor) and v.is_floating_point()}


def _job(seed: int, lr: float) -> JobConfig:
    job = JobConfig()
    job.data.mock, job.data.num_workers, job.runtime.device = True, 0, "cpu"
    job.precision.dtype = "bf16"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 32, 2, 2
    job.train.iters, job.train.eval_interval, job.train.seed = 2, 0, seed
    job.optimizer.lr, job.scheduler.warmup_iters = lr, 0
    job.logging.tensorboard = False
    return job


def test_a_bf16_run_started_from_a_checkpoint_keeps_its_weights(tmp_path):
    trained = FinalWeights()
    pretrain(_job(seed=1, lr=1e-2), str(tmp_path / "a"), callbacks=[trained])
    job = _job(seed=2, lr=0.0)  # another initialisation; lr 0: the steps must leave the loaded weights as they are
    job.checkpoint.init_from, job.checkpoint.save_at_end = str(tmp_path / "a" / "checkpoints"), False
    started = FinalWeights()
    pretrain(job, str(tmp_path / "b"), callbacks=[started])
    assert set(started.weights) == set(trained.weights)
    for name, value in trained.weights.items():
        assert torch.equal(started.weights[name], value), name
