"""The reward model through the trainer: pair samples laid out chosen-block then rejected-block, a start from a
language model's checkpoint with a fresh head, loss and TRL's metrics in metrics.jsonl, exact resume, and the
export of the trained model scoring as ours in transformers."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.pair_data import PairDataset, pair_rows
from megatron_sota.posttrain.reward import _pair_loss
from megatron_sota.posttrain.reward_loss import pair_losses
from megatron_sota.training.callbacks.base import Callback
from tests.posttrain.examples import EOD, StopAt
from tests.posttrain.pair_examples import pairs, rm_job, use_fake_pairs

METRICS = ("accuracy", "margin", "mean_reward")


def test_pair_samples_hold_chosen_then_rejected_and_micro_batches_put_all_chosen_rows_first():
    made = pairs(3, seed=1)
    data = PairDataset(made, num_samples=4, seq_length=24, pad_id=EOD, seed=None)
    sample = data[1]
    chosen, rejected = made[1].chosen, made[1].rejected
    n = len(chosen.ids)
    assert sample["tokens"][0, :n].tolist() == list(chosen.ids) and sample["tokens"][0, n:].eq(EOD).all()
    assert sample["labels"][1, : len(rejected.ids) - 1].tolist() == list(rejected.ids[1:])
    assert sample["loss_mask"][0, : n - 1].tolist() == [float(t) for t in chosen.trained[1:]]
    assert sample["real_mask"].sum(1).tolist() == [n, len(rejected.ids)]
    assert sample["pair_index"] == 1 and sample["margin"] == made[1].margin
    assert data[3]["pair_index"] == -1 and not data[3]["real_mask"].any()  # past the pairs: an empty sample

    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    rows = pair_rows(batch)
    assert rows["tokens"].shape == (6, 24)
    expected = [sample["tokens"][side] for side in (0, 1) for sample in (data[0], data[1], data[2])]
    assert torch.equal(rows["tokens"], torch.stack(expected))
    # The loss function reads row k and row n + k as pair k, and leaves empty samples out.
    scores = torch.randn(8, 24, 1)
    four = torch.utils.data.default_collate([data[i] for i in range(4)])
    real, index, margin = pair_rows(four)["real_mask"], four["pair_index"], four["margin"]
    assert index.tolist() == [0, 1, 2, -1] and margin.tolist() == [p.margin for p in made] + [0.0]
    loss, count, report = _pair_loss(real, index, margin, 0.0, scores)
    last = real.long().sum(1) - 1
    at_last = scores[torch.arange(8), last.clamp(min=0), 0]
    keep = torch.tensor([0, 1, 2])
    expected_loss = pair_losses(at_last[keep], at_last[4 + keep], margin[keep]).sum()
    torch.testing.assert_close(loss, expected_loss)
    assert count == 3 and report["lm loss"][1] == 3 and report["accuracy"][1] == 3


def test_a_reward_model_needs_untied_embeddings_before_anything_is_built():
    job = rm_job()
    job.model.untie_embeddings_and_output_weights = False
    with pytest.raises(MegatronSotaError, match="untie_embeddings_and_output_weights=false: a reward model"):
        validate_job(job, 1, Machine(cuda=False, transformer_engine=False))


class KeepWeights(Callback):
    """The first chunk's weights after the last step (the ones the run saves at its end)."""

    weights: dict = {}

    def post_train(self, trainer):
        from megatron_sota.checkpointing.contents import unwrap

        KeepWeights.weights = {k: v.clone() for k, v in unwrap(trainer.state.models[0]).state_dict().items()
                               if not k.endswith("_extra_state")}


@pytest.fixture(scope="module")
def language_model(tmp_path_factory):
    """A language model of the reward model's sizes, pretrained for two steps on mock data: checkpoint and weights."""
    from megatron_sota.training.trainer import pretrain

    job = rm_job()
    job.posttrain, job.data.mock = None, True
    # Two steps after a one-step warm-up (whose LR is 0): weights that differ from a fresh model's.
    job.train.iters, job.checkpoint.save_at_end = 2, True
    run = tmp_path_factory.mktemp("lm")
    pretrain(job, str(run), callbacks=[KeepWeights()])
    return str(run / "checkpoints" / "iter_0000002"), KeepWeights.weights


def test_a_reward_model_starts_from_a_language_model_and_logs_loss_and_trls_metrics(tmp_path, language_model, monkeypatch):
    from megatron_sota.checkpointing.contents import unwrap
    from megatron_sota.conversion.llama_mapping import REWARD_HEAD
    from megatron_sota.posttrain.reward import RewardObjective
    from megatron_sota.training.trainer import pretrain

    checkpoint, pretrained = language_model
    seen = {}

    class Watched(RewardObjective):
        def before_first_step(self, state, progress):
            seen.update({k: v.clone() for k, v in unwrap(state.models[0]).state_dict().items() if v is not None})

    use_fake_pairs(monkeypatch)
    job = rm_job(valid_files=["valid.jsonl"])
    job.checkpoint.init_from, job.train.eval_interval = checkpoint, 3
    summary = pretrain(job, str(tmp_path), objective=Watched(job.posttrain))

    body = [key for key in pretrained if key != "output_layer.weight"]
    assert body and all(torch.equal(seen[key], pretrained[key]) for key in body)
    assert REWARD_HEAD in seen and REWARD_HEAD not in pretrained and seen[REWARD_HEAD].abs().sum() > 0

    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [row for row in rows if "loss" in row]
    valid = [row for row in rows if "val_loss" in row]
    assert len(train) == 2 * 24 // 4 and len(valid) == 4
    assert [row["loss"] for row in train] == summary.losses
    assert all(set(METRICS) <= set(row) for row in train)
    assert all({f"val_{name}" for name in METRICS} <= set(row) for row in valid)
    assert train[0]["accuracy"] < 1 and train[-1]["accuracy"] == 1 and train[-1]["loss"] < train[0]["loss"]
    assert valid[-1]["val_accuracy"] == 1 and valid[-1]["val_margin"] > 0


def test_a_reward_model_resumes_exactly(tmp_path, monkeypatch):
    from megatron_sota.posttrain.run import posttrain

    use_fake_pairs(monkeypatch)
    job = rm_job()
    straight = posttrain(job, str(tmp_path / "straight"))
    stopped = posttrain(job, str(tmp_path / "resumed"), callbacks=[StopAt(3)])
    assert stopped.exit_code == 75 and stopped.losses == straight.losses[:3]
    resumed = posttrain(job, str(tmp_path / "resumed"))
    assert resumed.first_step == 4 and resumed.losses == straight.losses[3:]
    metrics = {tag: [json.loads(line) for line in open(tmp_path / tag / "metrics.jsonl")]
               for tag in ("straight", "resumed")}
    for name in METRICS:
        assert [row[name] for row in metrics["resumed"]] == [row[name] for row in metrics["straight"]], name
