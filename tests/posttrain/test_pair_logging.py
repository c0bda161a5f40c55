"""What the console and metrics.jsonl say of a pair objective (reward model, DPO): no perplexity of a loss per
pair, and tokens/s counting both rows (chosen and rejected) of every pair."""

from __future__ import annotations

import json
import logging

import pytest

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.metrics import MetricsWriter
from tests.log_records import logged


@pytest.fixture
def metrics_log():
    """(level, message) of what training/metrics.py logs at INFO or above."""
    with logged("megatron_sota.training.metrics", logging.INFO) as records:
        yield records


def _messages(records) -> list:
    return [message for _, message in records]


class _StepSeconds(Callback):
    def __init__(self):
        self.seconds = {}

    def post_step(self, trainer, outcome):
        self.seconds[outcome.step] = outcome.seconds


def test_the_validation_line_shows_a_perplexity_only_when_asked(tmp_path, metrics_log):
    writer = MetricsWriter(str(tmp_path), enabled=True, tensorboard=False, total_steps=2)
    writer.log_validation(1, 2.0, {"accuracy": 0.5})
    writer.log_validation(2, 2.0, {"accuracy": 0.5}, perplexity=False)
    writer.close()
    assert _messages(metrics_log) == ["validation at step 1: loss 2.0000 | ppl 7.39 | accuracy 0.5000",
                             "validation at step 2: loss 2.0000 | accuracy 0.5000"]


@pytest.mark.parametrize("objective", ["rm", "dpo"])
def test_pair_objectives_log_no_perplexity_and_count_both_rows_of_a_pair_in_tokens_per_s(
    tmp_path, metrics_log, objective, monkeypatch
):
    from megatron_sota.posttrain.run import posttrain
    from tests.posttrain import dpo_examples, pair_examples

    if objective == "rm":
        pair_examples.use_fake_pairs(monkeypatch)
        job = pair_examples.rm_job(valid_files=["valid.jsonl"])
    else:
        dpo_examples.use_fake_pairs(monkeypatch)
        job = dpo_examples.dpo_job(valid_files=["valid.jsonl"])
    job.train.iters, job.train.eval_interval = 3, 3
    seconds = _StepSeconds()
    summary = posttrain(job, str(tmp_path), callbacks=[seconds])
    (validation,) = [line for line in _messages(metrics_log) if line.startswith("validation at step 3:")]
    assert "ppl" not in validation and f"loss {summary.val_losses[0]:.4f}" in validation

    tokens_per_step = job.train.global_batch_size * 2 * job.train.seq_length  # a chosen and a rejected row per pair
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [row for row in rows if "tokens_per_s" in row]
    assert len(train) == 3
    for row in train:
        assert row["tokens_per_s"] * row["step_time_s"] == pytest.approx(tokens_per_step, rel=1e-9)
    # The run's mean leaves the first step (warm-up) out.
    timed = seconds.seconds[2] + seconds.seconds[3]
    assert summary.tokens_per_s == pytest.approx(2 * tokens_per_step / timed, rel=1e-9)
