"""DPO through the trainer: the first step's loss is ln 2 (the policy is the reference it starts from), TRL's metric
names reach metrics.jsonl and TensorBoard, and a resumed run loads its reference table and reproduces an uninterrupted one."""

from __future__ import annotations

import glob
import json
import math

import pytest

from tests.posttrain.dpo_examples import dpo_job, use_fake_pairs
from tests.posttrain.examples import StopAt

TRL_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def _scalars(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = glob.glob(str(run_dir / "tensorboard" / "events.out.tfevents.*"))
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    return {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_dpo_from_an_init_checkpoint_starts_at_ln2_and_logs_trls_metrics(tmp_path, monkeypatch):
    from megatron_sota.posttrain.run import posttrain

    use_fake_pairs(monkeypatch)
    first = dpo_job()
    first.train.iters, first.checkpoint.save_at_end = 2, True
    posttrain(first, str(tmp_path / "first"))  # trained weights: the reference is not the seeded initialisation
    job = dpo_job(valid_files=["valid.jsonl"])
    job.checkpoint.init_from = str(tmp_path / "first" / "checkpoints")
    job.train.eval_interval, job.logging.tensorboard = 3, True
    summary = posttrain(job, str(tmp_path / "dpo"))
    assert summary.losses[0] == pytest.approx(math.log(2), rel=1e-6)
    rows = [json.loads(line) for line in open(tmp_path / "dpo" / "metrics.jsonl")]
    train = [row for row in rows if "loss" in row]
    assert len(train) == 3 and all(name in row for row in train for name in TRL_NAMES)
    assert abs(train[0]["rewards/margins"]) < 1e-5
    (valid,) = [row for row in rows if "val_loss" in row]
    assert all(f"val_{name}" in valid for name in TRL_NAMES) and valid["val_rewards/margins"] > 0
    scalars = _scalars(tmp_path / "dpo")
    for name in TRL_NAMES:
        assert scalars[f"train/{name}"] == pytest.approx([row[name] for row in train], rel=1e-6)
        assert scalars[f"valid/{name}"] == pytest.approx([valid[f"val_{name}"]], rel=1e-6)


def test_dpo_validation_counts_only_real_pairs(tmp_path, monkeypatch):
    """6 validation pairs: batches of 4 top the last one up with empty samples (one micro-batch of 4: two real
    pairs, two empty, so the rows kept must follow pair_rows' order), batches of 2 need none; with the same weights
    (lr 0) both give the mean over the same 6 pairs."""
    from megatron_sota.posttrain.run import posttrain

    use_fake_pairs(monkeypatch)
    results = []
    for batch in (4, 2):
        job = dpo_job(valid_files=["valid.jsonl"])
        job.train.global_batch_size, job.train.micro_batch_size = batch, batch
        job.train.iters, job.train.eval_interval, job.optimizer.lr = 1, 1, 0.0
        summary = posttrain(job, str(tmp_path / str(batch)))
        results.append((summary.val_losses, summary.val_metrics))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for name in TRL_NAMES:
        assert results[0][1][0][name] == pytest.approx(results[1][1][0][name], rel=1e-6, abs=1e-9)


def test_dpo_resumes_exactly_with_the_stored_reference_table(tmp_path, monkeypatch):
    import megatron_sota.posttrain.reference_logps as reference_logps
    from megatron_sota.posttrain.run import posttrain

    use_fake_pairs(monkeypatch)
    job = dpo_job()
    job.train.iters = 4
    straight = posttrain(job, str(tmp_path / "straight"))
    stopped = posttrain(job, str(tmp_path / "resumed"), callbacks=[StopAt(2)])
    assert stopped.exit_code == 75 and stopped.losses == straight.losses[:2]

    def recompute(*args, **kwargs):
        raise AssertionError("a resumed run recomputed its reference log-probs from the trained weights")

    monkeypatch.setattr(reference_logps, "compute_reference_logps", recompute)
    resumed = posttrain(job, str(tmp_path / "resumed"))
    assert resumed.first_step == 3 and resumed.losses == straight.losses[2:]
