"""SFT through the trainer: a packed row's loss is its documents' loss run alone, steps come from epochs,
a resumed run reproduces an uninterrupted one, and an objective's own metrics reach metrics.jsonl."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.sft_data import lay_out, row_sample
from tests.posttrain.examples import EOD, VOCAB, StopAt, examples, sft_job, use_fake_encodings


def _masked_loss(model, sample: dict, with_ids: bool) -> tuple[torch.Tensor, torch.Tensor]:
    batch = {key: value[None] for key, value in sample.items()}
    ids = batch["document_ids"] if with_ids else None
    per_token = model(batch["tokens"], batch["position_ids"], ids, labels=batch["labels"])
    return (per_token * batch["loss_mask"]).sum(), batch["loss_mask"].sum()


def test_a_packed_rows_loss_is_the_token_weighted_loss_of_its_documents_run_alone():
    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config
    from megatron_sota.model.kernel_choice import KernelChoice
    from megatron_sota.runtime.session import distributed_session

    documents = examples(3, seed=7, longest=20)
    seq = sum(len(d.ids) for d in documents) + 5  # and some padding
    model_config, parallel = ModelConfig(num_layers=2), ParallelConfig()
    with distributed_session(parallel, "cpu", 1, seed=0):
        config = build_transformer_config(model_config, parallel, PrecisionConfig(), "none", "cpu", False, KernelChoice())
        (model,) = build_model_chunks(model_config, config, VOCAB, seq, 0, False, KernelChoice())
        model.eval()
        with torch.no_grad():
            packed = row_sample(documents, seq, EOD, with_document_ids=True)
            loss, count = _masked_loss(model, packed, with_ids=True)
            crossing, _ = _masked_loss(model, packed, with_ids=False)
            alone = [_masked_loss(model, row_sample([d], len(d.ids), EOD, False), False) for d in documents]
    expected = sum(s for s, _ in alone) / sum(c for _, c in alone)
    assert count == sum(c for _, c in alone)
    torch.testing.assert_close(loss / count, expected, rtol=1e-5, atol=1e-6)
    # Attending across documents changes it (the comparison can fail).
    assert not torch.isclose(crossing / count, expected, rtol=1e-3)


def test_sft_derives_its_steps_from_epochs_and_resumes_exactly(tmp_path, monkeypatch):
    from megatron_sota.posttrain.run import posttrain

    use_fake_encodings(monkeypatch)
    job = sft_job(epochs=3)
    job.train.global_batch_size = 4
    straight = posttrain(job, str(tmp_path / "straight"))
    rows = lay_out(examples(40, seed=len("train.jsonl")), 64, True, "k").rows
    assert len(rows) == 10 and len(straight.losses) == 3 * 10 // 4
    assert straight.losses[-1] < straight.losses[0]
    stopped = posttrain(job, str(tmp_path / "resumed"), callbacks=[StopAt(3)])
    assert stopped.exit_code == 75 and stopped.losses == straight.losses[:3]
    resumed = posttrain(job, str(tmp_path / "resumed"))
    assert resumed.first_step == 4 and resumed.losses == straight.losses[3:]


def test_packed_and_unpacked_validation_give_the_same_token_weighted_loss(tmp_path, monkeypatch):
    """Validation reads every held-out conversation once: packed into shared rows (document ids through the
    trainer's forward step) or one per row, each token's loss is its conversation's alone."""
    from megatron_sota.posttrain.run import posttrain

    use_fake_encodings(monkeypatch)
    val_losses = {}
    for packing in (True, False):
        job = sft_job(valid_files=["valid.jsonl"], packing=packing)
        job.train.iters, job.train.eval_interval, job.optimizer.lr = 1, 1, 0.0  # the same weights in both runs
        val_losses[packing] = posttrain(job, str(tmp_path / str(packing))).val_losses
    assert len(val_losses[True]) == 1
    assert val_losses[True] == pytest.approx(val_losses[False], rel=1e-6)


def test_post_training_configs_are_checked_with_the_rest():
    job = sft_job(epochs=0)
    job.parallel.cp, job.posttrain.objective, job.train.iters = 2, "orpo", -1
    with pytest.raises(MegatronSotaError) as err:
        validate_job(job, 2, Machine(cuda=False, transformer_engine=False))
    message = str(err.value)
    for expected in ("posttrain.objective must be one of sft, rm, dpo, ppo, grpo, got 'orpo'", "parallel.cp=2: post-training",
                     "posttrain.epochs must be >= 1", "train.iters must be >= 0"):
        assert expected in message
    assert "data.paths" not in message  # post-training reads posttrain.train_files, not the blend


def test_the_pretraining_entry_refuses_a_post_training_job(tmp_path):
    from megatron_sota.training.trainer import pretrain

    with pytest.raises(MegatronSotaError, match="is run by `python -m megatron_sota.posttrain`"):
        pretrain(sft_job(), str(tmp_path))


def _twice_the_loss(forward_step, data_iterator, model):
    output, loss_func = forward_step(data_iterator, model)

    def with_metric(output_tensor):
        loss, count, report = loss_func(output_tensor)
        return loss, count, {**report, "test/twice": report["lm loss"] * torch.tensor([2.0, 1.0])}

    return output, with_metric


def test_an_objectives_metrics_reach_metrics_jsonl_for_training_and_validation(tmp_path):
    from megatron_sota.config.job import JobConfig
    from megatron_sota.training.objective import Objective
    from megatron_sota.training.trainer import pretrain

    class Twice(Objective):
        metric_names = ("test/twice",)
        hooked = []

        def model_hook(self, chunks, config):
            self.hooked.append(("model", [type(chunk).__name__ for chunk in chunks]))
            return chunks

        def before_first_step(self, state, progress):
            self.hooked.append(("first step", progress.iteration, state.train_iterators is not None))

        def forward_step(self, state):
            return partial(_twice_the_loss, super().forward_step(state))

    job = JobConfig()
    job.data.mock, job.data.num_workers, job.runtime.device = True, 0, "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 32, 2, 4
    job.train.iters, job.train.eval_interval, job.train.eval_iters = 2, 2, 1
    job.logging.tensorboard, job.logging.interval, job.checkpoint.save_at_end = False, 1, False
    objective = Twice()
    summary = pretrain(job, str(tmp_path), objective=objective)
    assert objective.hooked == [("model", ["GPTModel"]), ("first step", 0, True)]  # before DDP; data started
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [row for row in rows if "loss" in row]
    assert [row["test/twice"] for row in train] == pytest.approx([2 * row["loss"] for row in train], rel=1e-12)
    (valid,) = [row for row in rows if "val_loss" in row]
    assert valid["val_test/twice"] == pytest.approx(2 * valid["val_loss"], rel=1e-12)
    assert summary.val_metrics == [{"test/twice": valid["val_test/twice"]}]
