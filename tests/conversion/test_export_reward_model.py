"""A reward model built here (GPTModel + scalar head), saved and exported: transformers'
LlamaForSequenceClassification must score padded pairs as we do, and TRL's RewardTrainer must compute
the same Bradley-Terry loss (margin and centering on), the same metrics and the same gradients."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from megatron_sota.config.job import JobConfig
from megatron_sota.conversion import llama_mapping as names
from megatron_sota.conversion.cli import main as convert
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.reward_loss import last_real_token_scores, pair_losses, reward_extremes, reward_metric_sums
from tests.reward_model_rows import EOD, PAD, VOCAB, padded_pairs, tiny_reward_job

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

pytestmark = pytest.mark.slow

MARGIN, CENTERING = torch.tensor([0.5, -0.25]), 0.01


def _reward_run(job: JobConfig, checkpoints: str):
    """Our scores, loss and gradients for padded_pairs() (one rank, TP=1), and the model saved to `checkpoints`."""
    from megatron.core import parallel_state

    from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
    from megatron_sota.runtime.session import distributed_session
    from tests.reward_model_rows import build_reward_model

    tokens, real = padded_pairs()
    with distributed_session(job.parallel, "cpu", seed=0):
        model = build_reward_model(job)
        positions = torch.arange(tokens.shape[1]).expand_as(tokens)
        scores = last_real_token_scores(model(tokens, positions, None, labels=None), real)
        chosen, rejected = scores.chunk(2)
        loss = pair_losses(chosen, rejected, MARGIN, CENTERING).mean()
        loss.backward()
        grads = {name: param.grad.clone() for name, param in model.named_parameters()}
        manager = CheckpointManager(job.checkpoint, checkpoints, vocab_size=VOCAB)
        layout = checkpoint_layout(job.parallel, parallel_state.get_data_parallel_world_size())
        state = SimpleNamespace(models=[model], optimizer=None, scheduler=None)
        manager.save(state, Progress(), OmegaConf.to_yaml(OmegaConf.structured(job)), layout, include_optimizer=False)
        manager.close()
    return scores.detach(), loss.detach(), grads


def _as_hf(grads: dict, job: JobConfig) -> dict:
    """Our per-parameter gradients under Hugging Face's names (the export's own mapping)."""
    out = {
        names.HF_EMBEDDING: names.unpad_vocab(grads[names.EMBEDDING], VOCAB),
        names.HF_FINAL_NORM: grads[names.FINAL_NORM],
        names.HF_SCORE: grads[names.REWARD_HEAD],
    }
    local = {names.ATTN_NORM: "input_layernorm.weight", names.QKV: "self_attention.linear_qkv.weight",
             names.PROJ: "self_attention.linear_proj.weight", names.MLP_NORM: "pre_mlp_layernorm.weight",
             names.FC1: "mlp.linear_fc1.weight", names.FC2: "mlp.linear_fc2.weight"}
    for layer in range(job.model.num_layers):
        tensors = {key: grads[f"decoder.layers.{layer}.{name}"] for key, name in local.items()}
        out.update(names.layer_to_hf(tensors, job.model, layer))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    job = tiny_reward_job()
    checkpoints = str(tmp_path_factory.mktemp("rm") / "checkpoints")
    ours = _reward_run(job, checkpoints)
    out = str(tmp_path_factory.mktemp("hf") / "reward")
    assert convert(["export", "--load", checkpoints, "--save", out, "--dtype", "fp32", "--pad-token-id", str(PAD)]) == 0
    return job, checkpoints, out, ours


def _trl_trainer(model, out_dir: str):
    """A RewardTrainer around `model` with a word-level tokenizer whose pad is PAD (pre-tokenized data: no text)."""
    from datasets import Dataset
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t1")), pad_token=f"t{PAD}", eos_token=f"t{EOD}"
    )
    tokens, real = padded_pairs()
    rows = [row[mask.bool()].tolist() for row, mask in zip(tokens, real)]
    pairs = len(rows) // 2
    data = Dataset.from_dict({"chosen_ids": rows[:pairs], "rejected_ids": rows[pairs:], "margin": MARGIN.tolist()})
    args = trl.RewardConfig(output_dir=out_dir, center_rewards_coefficient=CENTERING, report_to="none", use_cpu=True)
    return trl.RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer), data


def test_config_json_describes_a_one_label_sequence_classifier(exported):
    _, _, out, _ = exported
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] == PAD
    loaded = transformers.AutoConfig.from_pretrained(out)
    assert loaded.num_labels == 1 and loaded.pad_token_id == PAD


def test_transformers_and_trl_reproduce_scores_loss_metrics_and_gradients(exported, tmp_path):
    job, _, out, (scores, loss, grads) = exported
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    trainer, data = _trl_trainer(model, str(tmp_path / "trl"))
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    assert torch.equal(batch["input_ids"], padded_pairs()[0])  # TRL pads the rows exactly as ours are padded

    model.train()
    with torch.no_grad():
        reference_scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    torch.testing.assert_close(scores, reference_scores, rtol=1e-5, atol=1e-6)

    reference_loss = trainer.compute_loss(model, dict(batch))
    reference_loss.backward()
    torch.testing.assert_close(loss, reference_loss.detach(), rtol=1e-5, atol=0)

    ours_hf = _as_hf(grads, job)
    reference = dict(model.named_parameters())
    assert set(ours_hf) == set(reference)
    for name, grad in ours_hf.items():
        expected = reference[name].grad
        scale = expected.abs().max().item()
        assert scale > 0, name
        assert (grad - expected).abs().max().item() <= 1e-5 * scale, name

    chosen, rejected = scores.chunk(2)
    logged = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    ours = {key: (total / count).item() for key, (total, count) in reward_metric_sums(chosen, rejected).items()}
    ours.update({key: value.item() for key, value in reward_extremes(chosen, rejected).items()})
    for key, value in ours.items():
        assert value == pytest.approx(logged[key], rel=1e-5, abs=1e-6), key


def test_exporting_a_reward_model_without_a_distinct_pad_id_is_refused(exported, tmp_path):
    from megatron_sota.conversion.export import ExportOptions, export_checkpoint

    _, checkpoints, _, _ = exported
    for pad in (None, EOD):  # NullTokenizer has no pad; eos would be skipped as padding by transformers
        options = ExportOptions(load=checkpoints, save=str(tmp_path / "out"), pad_token_id=pad, show_progress=False)
        with pytest.raises(MegatronSotaError, match="pad token id that no sequence ends with"):
            export_checkpoint(options)
