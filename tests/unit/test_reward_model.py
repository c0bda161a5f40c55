"""The reward model's pieces: scores at the last real token, the pair loss's parts, metrics that add up over
micro-batches, the head's checkpoint key, and initialising a reward model from a language model's checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.reward_loss import last_real_token_scores, pair_losses, reward_metric_sums
from tests.reward_model_rows import VOCAB, build_reward_model, padded_pairs, tiny_reward_job


def test_scores_are_read_at_each_rows_last_real_token_with_either_padding():
    scores = torch.arange(12.0).view(2, 6)
    right = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert last_real_token_scores(scores.unsqueeze(-1), right).tolist() == [scores[0, 2].item(), scores[1, 5].item()]
    left = right.flip(1)
    assert last_real_token_scores(scores, left).tolist() == [scores[0, 5].item(), scores[1, 5].item()]
    with pytest.raises(MegatronSotaError, match=r"rows \[1\]"):
        last_real_token_scores(scores, torch.tensor([[1, 0, 0, 0, 0, 0], [0] * 6]))


def test_margin_shifts_the_difference_and_centering_adds_the_squared_sum():
    chosen, rejected, margin = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0]), torch.tensor([0.25, -1.0])
    plain = pair_losses(chosen, rejected)
    torch.testing.assert_close(pair_losses(chosen + margin, rejected, margin), plain)
    centred = pair_losses(chosen, rejected, centering=0.1) - plain
    torch.testing.assert_close(centred, 0.1 * (chosen + rejected) ** 2)
    torch.testing.assert_close(pair_losses(chosen, chosen), torch.log(torch.tensor([2.0, 2.0])))


def test_metric_sums_of_micro_batches_add_up_to_the_whole_batch_and_ties_are_wrong():
    chosen, rejected = torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([0.0, 2.0, 4.0, -1.0])
    whole = reward_metric_sums(chosen, rejected)
    halves = [reward_metric_sums(chosen[i : i + 2], rejected[i : i + 2]) for i in (0, 2)]
    for key, (total, count) in whole.items():
        assert (halves[0][key][0] + halves[1][key][0], halves[0][key][1] + halves[1][key][1]) == (total, count), key
    accuracy, pairs = whole["accuracy"]
    assert accuracy / pairs == 0.5  # the tie (2 vs 2) counts as wrong, as in TRL
    assert whole["mean_reward"][0] / whole["mean_reward"][1] == torch.cat([chosen, rejected]).mean()


def _language_model(job):
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config

    config = build_transformer_config(job.model, job.parallel, job.precision, "none", "cpu", False)
    (model,) = build_model_chunks(job.model, config, VOCAB, 16, job.train.seed + 1, False)
    return model


def test_a_reward_model_starts_from_a_language_models_checkpoint_with_a_fresh_head(tmp_path):
    from megatron.core import dist_checkpointing, parallel_state
    from torch.distributed.checkpoint import CheckpointException

    from megatron_sota.checkpointing.manager import CheckpointManager, Progress, checkpoint_layout
    from megatron_sota.conversion.llama_mapping import OUTPUT_LAYER, REWARD_HEAD
    from megatron_sota.posttrain.reward_head import keys_missing_from_pretrained
    from megatron_sota.runtime.session import distributed_session

    job = tiny_reward_job()
    with distributed_session(job.parallel, "cpu", seed=0):
        language = _language_model(job)  # other weights (another init seed) and a vocabulary output layer
        manager = CheckpointManager(job.checkpoint, str(tmp_path), vocab_size=VOCAB)
        layout = checkpoint_layout(job.parallel, parallel_state.get_data_parallel_world_size())
        manager.save(SimpleNamespace(models=[language], optimizer=None, scheduler=None), Progress(),
                     OmegaConf.to_yaml(OmegaConf.structured(job)), layout, include_optimizer=False)
        manager.close()
        saved = str(tmp_path / "iter_0000000")

        reward = build_reward_model(job)
        template = reward.sharded_state_dict()
        language_keys = set(language.sharded_state_dict())
        assert set(template) == language_keys - {OUTPUT_LAYER} | {REWARD_HEAD}
        assert template[REWARD_HEAD].replica_id == (0, 0, 0) and REWARD_HEAD not in language_keys
        skip = keys_missing_from_pretrained(template)
        assert skip == [REWARD_HEAD]

        # megatron-core's default load does not skip what the checkpoint lacks; it fails (a BaseException).
        with pytest.raises(CheckpointException, match=f"{REWARD_HEAD} from model not in state dict"):
            dist_checkpointing.load({"model": reward.sharded_state_dict()}, saved)
        fresh = {key: reward.state_dict()[key].clone() for key in skip}
        loaded = dist_checkpointing.load({"model": {k: v for k, v in template.items() if k not in skip}}, saved)
        reward.load_state_dict({**loaded["model"], **fresh}, strict=True)

        expected = language.state_dict()
        for key, value in reward.state_dict().items():
            if key in skip:
                assert torch.equal(value, fresh[key]) and value.abs().sum() > 0
            elif not key.endswith("_extra_state"):
                assert torch.equal(value, expected[key]), key


def test_a_tied_model_cannot_take_the_reward_head():
    from megatron_sota.runtime.session import distributed_session

    job = tiny_reward_job()
    job.model.untie_embeddings_and_output_weights = False
    with distributed_session(job.parallel, "cpu", seed=0), pytest.raises(MegatronSotaError, match="untie"):
        build_reward_model(job)


def test_padding_does_not_change_a_rows_score():
    """Right padding after the last real token cannot reach it (causal attention)."""
    from megatron_sota.runtime.session import distributed_session

    tokens, real = padded_pairs()
    with distributed_session(tiny_reward_job().parallel, "cpu", seed=0):
        model = build_reward_model(tiny_reward_job())
        positions = torch.arange(tokens.shape[1]).expand_as(tokens)
        with torch.no_grad():
            padded = last_real_token_scores(model(tokens, positions, None, labels=None), real)
            length = int(real[3].sum())
            alone = model(tokens[3:, :length], positions[3:, :length], None, labels=None)[0, -1, 0]
    torch.testing.assert_close(padded[3], alone)
