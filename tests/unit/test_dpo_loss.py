"""DPO's loss, metrics and normalisation on hand-made log-probs, and the reference log-prob file of a run."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain import reference_logps as reference
from megatron_sota.posttrain.dpo_loss import DPOSettings, dpo_loss, mean_metrics


def _batch(pairs: int, seed: int = 0):
    """Per-token log-probs [2n, 6] and completion masks of different lengths (pair_rows' order: the n chosen rows,
    then the n rejected rows)."""
    generator = torch.Generator().manual_seed(seed)
    per_token = -torch.rand(2 * pairs, 6, generator=generator, dtype=torch.float64) * 3
    mask = torch.zeros(2 * pairs, 6)
    for row in range(2 * pairs):
        mask[row, 2 + row % 3 :] = 1  # prompt of 2-4 tokens, the completion after it
    return per_token, mask


def _by_hand(per_token, mask, ref, beta, eps, alpha):
    """The DPO formula pair by pair in plain floats, the chosen of pair k at row k, its rejected at row n + k."""
    losses = []
    nll, tokens = 0.0, 0.0
    n = ref.shape[0]
    for k in range(n):
        chosen = float((per_token[k] * mask[k]).sum())
        rejected = float((per_token[n + k] * mask[n + k]).sum())
        z = beta * ((chosen - float(ref[k, 0])) - (rejected - float(ref[k, 1])))
        log_sigmoid = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
        losses.append(-(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z))
        nll -= chosen
        tokens += float(mask[k].sum())
    return sum(losses) / len(losses) + alpha * nll / tokens


@pytest.mark.parametrize("eps,alpha", [(0.0, 0.0), (0.2, 0.0), (0.0, 0.7), (0.1, 0.5)])
def test_the_loss_per_pair_is_the_dpo_formula_with_label_smoothing_and_sft_term(eps, alpha):
    per_token, mask = _batch(3)
    ref = -torch.rand(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10
    loss_sum, pairs, report = dpo_loss(per_token, mask, ref, DPOSettings(beta=0.3, label_smoothing=eps, sft_weight=alpha))
    assert pairs.dtype == torch.int and int(pairs) == 3
    assert math.isclose(loss_sum.item() / 3, _by_hand(per_token, mask, ref, 0.3, eps, alpha), rel_tol=1e-12)
    assert torch.equal(report["loss"], torch.tensor([loss_sum.item(), 3.0], dtype=torch.float64))


def test_the_loss_is_ln2_and_the_rewards_zero_when_the_policy_is_the_reference():
    per_token, mask = _batch(4)
    logps = (per_token * mask).sum(dim=1).view(2, -1).T  # [pair, (chosen, rejected)]
    loss_sum, _, report = dpo_loss(per_token, mask, logps, DPOSettings(beta=0.1))
    assert math.isclose(loss_sum.item() / 4, math.log(2), rel_tol=1e-12)
    metrics = mean_metrics([report])
    assert metrics["rewards/chosen"] == metrics["rewards/margins"] == metrics["rewards/accuracies"] == 0.0
    assert math.isclose(metrics["logps/chosen"], logps[:, 0].mean().item(), rel_tol=1e-12)
    assert math.isclose(metrics["logps/rejected"], logps[:, 1].mean().item(), rel_tol=1e-12)


def test_metrics_of_two_micro_batches_average_over_all_pairs_as_one_batch_would():
    per_token, mask = _batch(5)
    ref = -torch.rand(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 10
    settings = DPOSettings(beta=0.5)
    whole = mean_metrics([dpo_loss(per_token, mask, ref, settings)[2]])
    first, second = [0, 1, 5, 6], [2, 3, 4, 7, 8, 9]  # pairs 0-1 and pairs 2-4, each in pair_rows' order
    parts = mean_metrics([dpo_loss(per_token[first], mask[first], ref[:2], settings)[2],
                          dpo_loss(per_token[second], mask[second], ref[2:], settings)[2]])
    for name, value in whole.items():
        assert math.isclose(parts[name], value, rel_tol=1e-12, abs_tol=1e-15), name
    chosen = (per_token[:5] * mask[:5]).sum(1) - ref[:, 0]
    rejected = (per_token[5:] * mask[5:]).sum(1) - ref[:, 1]
    assert math.isclose(whole["rewards/accuracies"], (chosen > rejected).double().mean().item())
    assert math.isclose(whole["rewards/margins"], 0.5 * (chosen - rejected).mean().item(), rel_tol=1e-12)
    assert 0.0 < whole["rewards/accuracies"] < 1.0  # the data exercise both outcomes


def test_the_gradient_is_that_of_the_mean_loss_per_pair_not_per_token():
    """What finalize_model_grads does with the count: divide the summed loss's gradient by the pairs."""
    per_token, mask = _batch(2)
    per_token.requires_grad_(True)
    ref = torch.zeros(2, 2, dtype=torch.float64)
    loss_sum, pairs, _ = dpo_loss(per_token, mask, ref, DPOSettings(beta=0.2))
    (grad,) = torch.autograd.grad(loss_sum / pairs, per_token)
    z = 0.2 * ((per_token[:2] * mask[:2]).sum(1) - (per_token[2:] * mask[2:]).sum(1))
    (expected,) = torch.autograd.grad(torch.nn.functional.softplus(-z).mean(), per_token)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)


def _samples(count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        tokens = torch.randint(0, 50, (2, 5 + index), generator=generator)
        out.append({"pair_index": index, "tokens": tokens, "labels": tokens.roll(-1, 1),
                    "loss_mask": (torch.arange(5 + index) >= 2).long().expand(2, -1)})
    return out


def test_a_stored_reference_table_is_loaded_back_and_refused_for_other_pairs(tmp_path):
    samples = _samples(3)
    table = torch.randn(3, 2, dtype=torch.float64)
    path = str(tmp_path / reference.REFERENCE_FILE)
    key = reference.samples_key(samples)
    reference.save_reference_logps(path, table, key)
    assert torch.equal(reference.load_reference_logps(path, key, 3), table)
    changed = _samples(3)
    changed[1]["loss_mask"] = changed[1]["loss_mask"].clone()
    changed[1]["loss_mask"][0, 3] = 0  # one token less in one completion
    with pytest.raises(MegatronSotaError, match="computed from other pairs"):
        reference.load_reference_logps(path, reference.samples_key(changed), 3)
    with pytest.raises(MegatronSotaError, match="computed from other pairs"):
        reference.load_reference_logps(path, reference.samples_key(samples, extra="another reference model"), 3)
    (tmp_path / "torn.pt").write_bytes(open(path, "rb").read()[:40])
    with pytest.raises(MegatronSotaError, match="torn.pt: not a reference"):
        reference.load_reference_logps(str(tmp_path / "torn.pt"), key, 3)


def test_a_resumed_run_loads_the_reference_table_instead_of_recomputing(tmp_path, monkeypatch):
    samples = _samples(2)
    table = torch.randn(2, 2, dtype=torch.float64)
    monkeypatch.setattr(reference, "compute_reference_logps", lambda *args: table)
    first = reference.reference_logps_for_run(str(tmp_path), [], samples, 2, 50, 1, torch.device("cpu"))
    assert torch.equal(first, table)

    def recompute(*args):
        raise AssertionError("recomputed although the run directory holds the table")

    monkeypatch.setattr(reference, "compute_reference_logps", recompute)
    again = reference.reference_logps_for_run(str(tmp_path), [], samples, 2, 50, 1, torch.device("cpu"))
    assert torch.equal(again, table)
    with pytest.raises(MegatronSotaError, match="computed from other pairs"):
        reference.reference_logps_for_run(str(tmp_path), [], _samples(2, seed=1), 2, 50, 1, torch.device("cpu"))
