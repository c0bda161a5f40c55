"""A reward model trained by `posttrain=rm` exports to a transformers LlamaForSequenceClassification that gives
each preference sequence the score the objective's own forward step reads at its last real token."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.conversion.cli import main as convert
from tests.posttrain.pair_examples import pairs, rm_job, use_fake_pairs
from tests.reward_model_rows import PAD, tiny_reward_job

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


def test_the_trained_reward_models_export_scores_pairs_as_the_objective_does(tmp_path, monkeypatch):
    from megatron_sota.checkpointing.manager import load_model_weights
    from megatron_sota.posttrain.pair_data import PairDataset, pair_rows
    from megatron_sota.posttrain.reward import _reward_forward
    from megatron_sota.posttrain.reward_loss import last_real_token_scores
    from megatron_sota.posttrain.run import posttrain
    from megatron_sota.runtime.session import distributed_session
    from tests.reward_model_rows import build_reward_model

    use_fake_pairs(monkeypatch)
    job = rm_job()
    job.train.iters, job.checkpoint.save_at_end = 4, True
    posttrain(job, str(tmp_path / "run"))
    checkpoint = str(tmp_path / "run" / "checkpoints")
    out = str(tmp_path / "hf")
    assert convert(["export", "--load", checkpoint, "--save", out, "--dtype", "fp32", "--pad-token-id", str(PAD)]) == 0

    held_out = pairs(4, seed=99)  # ids never PAD, so transformers finds each sequence's last token
    samples = PairDataset(held_out, 4, job.train.seq_length, pad_id=job.tokenizer.vocab_size - 1, seed=None)
    batch = torch.utils.data.default_collate(list(samples))
    with distributed_session(job.parallel, "cpu", seed=0):
        model = build_reward_model(tiny_reward_job())  # the same sizes as rm_job's
        load_model_weights([model], checkpoint + "/iter_0000004")
        model.eval()
        with torch.no_grad():
            output, _ = _reward_forward(torch.device("cpu"), 0.0, iter([batch]), model)
            ours = last_real_token_scores(output, pair_rows(batch)["real_mask"])

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    sequences = [p.chosen.ids for p in held_out] + [p.rejected.ids for p in held_out]  # pair_rows' order
    with torch.no_grad():
        theirs = torch.cat([hf(input_ids=torch.tensor([ids])).logits[:, 0] for ids in sequences])
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
