"""PPO and GRPO math against independent computations written here from the published formulas.

Each oracle is a plain Python loop over rows and tokens in float64: masked statistics, GAE (Schulman et al. 2016),
the clipped policy and value objectives (Schulman et al. 2017), the k1/k2/k3 KL estimators (Schulman 2020), GRPO's
group baseline (Shao et al. 2024). Rows have prompts and right padding of different lengths, and those hold
garbage (nan and large numbers): nothing outside a row's response may be read.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.advantages import (
    explained_variance, gae, group_advantages, masked_mean, masked_var, masked_whiten,
)
from megatron_sota.posttrain.ppo_loss import (
    KL_ESTIMATORS, kl_estimate, kl_penalised_rewards, policy_loss_terms, value_loss_terms,
)
from megatron_sota.posttrain.token_logps import token_entropy

T = 10
RUNS = [(2, 5), (3, 7), (4, 1), (1, 3), (6, 2)]  # (first response position, response length): prompt, response, padding
NAN = float("nan")


def _mask(runs=RUNS) -> torch.Tensor:
    mask = torch.zeros(len(runs), T, dtype=torch.bool)
    for row, (start, length) in enumerate(runs):
        mask[row, start:start + length] = True
    return mask


def _per_token(seed: int, scale: float = 1.0, runs=RUNS, dtype=torch.float64) -> torch.Tensor:
    """Random values on the response positions; on the prompt and the padding, garbage: nan at even positions,
    large finite numbers at odd ones (a result that filters nan only would still read them)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(len(runs), T, generator=generator, dtype=torch.float64) * scale
    garbage = torch.where(torch.arange(T) % 2 == 0, NAN, 37.0 + seed).expand(len(runs), T)
    return torch.where(_mask(runs), values, garbage).to(dtype)


def _response(tensor: torch.Tensor, runs=RUNS):
    """[(row, t, value)] over the response positions, as Python floats."""
    table = tensor.tolist()
    return [(row, t, table[row][t]) for row, (start, length) in enumerate(runs) for t in range(start, start + length)]


def _assert_zero_outside(tensor: torch.Tensor, runs=RUNS):
    assert torch.equal(tensor.masked_select(~_mask(runs)), torch.zeros(int((~_mask(runs)).sum()), dtype=tensor.dtype))


def test_masked_mean_variance_and_whitening_match_loops_over_response_tokens():
    values, mask = _per_token(0, scale=3.0) + 1.5, _mask()
    picked = [v for _, _, v in _response(values)]
    mean, n = math.fsum(picked) / len(picked), len(picked)
    biased = math.fsum((v - mean) ** 2 for v in picked) / n
    unbiased = biased * n / (n - 1)  # Bessel's correction
    assert float(masked_mean(values, mask)) == pytest.approx(mean, rel=1e-12)
    assert float(masked_var(values, mask)) == pytest.approx(unbiased, rel=1e-12)
    assert float(masked_var(values, mask, unbiased=False)) == pytest.approx(biased, rel=1e-12)
    for shift_mean in (True, False):
        whitened = masked_whiten(values, mask, shift_mean=shift_mean)
        for row, t, v in _response(values):
            expected = (v - mean) / math.sqrt(unbiased + 1e-8) + (0.0 if shift_mean else mean)
            assert float(whitened[row, t]) == pytest.approx(expected, rel=1e-12), (shift_mean, row, t)
        _assert_zero_outside(whitened)
    assert masked_whiten(values.float(), mask.int()).dtype == torch.float32
    with pytest.raises(MegatronSotaError, match="at least 2 masked elements, found 1"):
        masked_whiten(values[:2], _mask([(0, 0), (3, 1)]))


def _gae_loop(rewards, values, gamma, lam, runs=RUNS):
    """Schulman et al. 2016, eq. 16 by its recursion, one episode per row; V after the last response token is 0."""
    advantages = [[0.0] * T for _ in runs]
    for row, (start, length) in enumerate(runs):
        following = 0.0
        for t in reversed(range(start, start + length)):
            next_value = values[row][t + 1] if t + 1 < start + length else 0.0
            delta = rewards[row][t] + gamma * next_value - values[row][t]
            following = delta + gamma * lam * following
            advantages[row][t] = following
    return advantages


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.7)])
def test_gae_matches_the_recursion_of_schulman_2016(gamma, lam):
    runs = RUNS + [(5, 0)]  # and a row without a response: all zeros
    rewards, values = _per_token(1, runs=runs), _per_token(2, runs=runs)
    advantages, returns = gae(rewards, values, _mask(runs), gamma, lam)
    expected = _gae_loop(rewards.tolist(), values.tolist(), gamma, lam, runs)
    for row, t, v in _response(values, runs):
        assert float(advantages[row, t]) == pytest.approx(expected[row][t], rel=1e-12, abs=1e-12), (row, t)
        assert float(returns[row, t]) == pytest.approx(expected[row][t] + v, rel=1e-12, abs=1e-12), (row, t)
    _assert_zero_outside(advantages, runs)
    _assert_zero_outside(returns, runs)
    assert gae(rewards.float(), values.float(), _mask(runs), gamma, lam)[0].dtype == torch.float32
    gap = _mask(runs)
    gap[0, 4] = False
    with pytest.raises(MegatronSotaError, match=r"rows \[0\] have gaps"):
        gae(rewards, values, gap, gamma, lam)


def test_kl_estimators_match_their_definitions():
    logp, ref_logp = _per_token(3) - 2.0, _per_token(4) - 2.0
    for kind, formula in {
        "k1": lambda p, q: p - q,
        "k2": lambda p, q: 0.5 * (p - q) ** 2,
        "k3": lambda p, q: math.exp(q - p) - (q - p) - 1.0,
    }.items():
        estimate = kl_estimate(logp, ref_logp, kind)
        for (row, t, p), (_, _, q) in zip(_response(logp), _response(ref_logp)):
            assert float(estimate[row, t]) == pytest.approx(formula(p, q), rel=1e-12, abs=1e-15), (kind, row, t)
    with pytest.raises(MegatronSotaError, match="one of k1, k2, k3; found 'k4'"):
        kl_estimate(logp, ref_logp, "k4")
    assert KL_ESTIMATORS == ("k1", "k2", "k3")


@pytest.mark.parametrize("kind", KL_ESTIMATORS)
def test_kl_penalised_reward_puts_each_score_on_its_rows_last_real_token(kind):
    logp, ref_logp, mask = _per_token(5) - 2.0, _per_token(6) - 2.0, _mask()
    scores, beta = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.5], dtype=torch.float64), 0.1
    rewards = kl_penalised_rewards(scores, logp, ref_logp, mask, beta, kind)
    estimate = kl_estimate(logp, ref_logp, kind)
    for row, t, _ in _response(logp):
        start, length = RUNS[row]
        score = float(scores[row]) if t == start + length - 1 else 0.0
        assert float(rewards[row, t]) == pytest.approx(-beta * float(estimate[row, t]) + score, rel=1e-12), (row, t)
    _assert_zero_outside(rewards)
    padded = [row for row, (start, length) in enumerate(RUNS) if start + length < T]
    assert len(padded) >= 3 and all(float(rewards[row, RUNS[row][0] + RUNS[row][1]]) == 0.0 for row in padded)
    with pytest.raises(MegatronSotaError, match=r"rows \[1, 3\] have no response token"):
        kl_penalised_rewards(torch.zeros(4), logp[:4], ref_logp[:4], _mask([(2, 5), (0, 0), (4, 1), (9, 0)]), beta, kind)


def _clipped_policy_loop(logp, old_logp, advantages, clip):
    """Schulman et al. 2017, eq. 7 negated, token by token: (loss, clipped, ratio, approx_kl, d loss / d logp)."""
    loss = clipped = ratio_sum = approx_kl = 0.0
    grads = {}
    for (row, t, p), (_, _, q), (_, _, a) in zip(_response(logp), _response(old_logp), _response(advantages)):
        ratio = math.exp(p - q)
        plain, cut = -a * ratio, -a * min(max(ratio, 1.0 - clip), 1.0 + clip)
        loss += max(plain, cut)
        clipped += cut > plain
        ratio_sum += ratio
        approx_kl += 0.5 * (p - q) ** 2
        grads[row, t] = 0.0 if cut > plain else -a * ratio
    return loss, clipped, ratio_sum, approx_kl, grads


def test_policy_loss_terms_match_the_clipped_surrogate_token_by_token():
    logp = (_per_token(7, scale=0.3) - 1.0).requires_grad_()
    old_logp = (_per_token(8, scale=0.3) - 1.0).requires_grad_()
    advantages = _per_token(9).requires_grad_()
    terms = policy_loss_terms(logp, old_logp, advantages, _mask(), 0.2)
    terms["loss"].backward()
    loss, clipped, ratio, approx_kl, grads = _clipped_policy_loop(logp, old_logp, advantages, 0.2)
    assert 0 < clipped < len(grads) - 2  # both branches are taken
    assert terms["loss"].item() == pytest.approx(loss, rel=1e-12)
    assert float(terms["clipped"]) == clipped
    assert float(terms["ratio"]) == pytest.approx(ratio, rel=1e-12)
    assert float(terms["approx_kl"]) == pytest.approx(approx_kl, rel=1e-12)
    for (row, t), grad in grads.items():
        assert float(logp.grad[row, t]) == pytest.approx(grad, rel=1e-12, abs=1e-15), (row, t)
    _assert_zero_outside(logp.grad)
    assert old_logp.grad is None and advantages.grad is None  # the gradient flows through logp only


def test_first_epoch_ratio_is_exactly_one_and_the_gradient_is_minus_the_advantage():
    old_logp, advantages, mask = _per_token(10) - 1.0, _per_token(11), _mask()
    logp = old_logp.clone().requires_grad_()  # the policy that generated the rollout, before any update
    terms = policy_loss_terms(logp, old_logp, advantages, mask, 0.2)
    terms["loss"].backward()
    tokens = int(mask.sum())
    assert float(terms["ratio"]) == tokens and float(terms["clipped"]) == 0 and float(terms["approx_kl"]) == 0
    assert torch.equal(logp.grad, (-advantages).masked_fill(~mask, 0))
    assert terms["loss"].item() == pytest.approx(-math.fsum(a for _, _, a in _response(advantages)), rel=1e-12)


@pytest.mark.parametrize("clip", [0.2, None])
def test_value_loss_terms_match_the_clipped_value_objective_token_by_token(clip):
    values = _per_token(12).requires_grad_()
    old_values, returns = _per_token(13, scale=0.2) + values.detach(), _per_token(14).requires_grad_()
    terms = value_loss_terms(values, old_values.requires_grad_(), returns, _mask(), clip)
    terms["loss"].backward()
    loss = clipped = 0.0
    for (row, t, v), (_, _, v_old), (_, _, r) in zip(_response(values), _response(old_values), _response(returns)):
        plain = (v - r) ** 2
        cut = (min(max(v, v_old - clip), v_old + clip) - r) ** 2 if clip is not None else plain
        loss += 0.5 * max(plain, cut)
        clipped += cut > plain
        grad = 0.0 if cut > plain else v - r  # the clipped value has no gradient outside [V_old ± ε]
        assert float(values.grad[row, t]) == pytest.approx(grad, rel=1e-12, abs=1e-15), (row, t)
    assert terms["loss"].item() == pytest.approx(loss, rel=1e-12)
    assert float(terms["clipped"]) == clipped and (clipped > 0) == (clip is not None)
    _assert_zero_outside(values.grad)
    assert old_values.grad is None and returns.grad is None


def test_group_advantages_match_a_loop_over_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, -1.0, 2.0, 0.0], dtype=torch.float64)
    for scale in (True, False):
        ours = group_advantages(rewards, 4, scale=scale).tolist()
        for start in range(0, 12, 4):
            group = rewards[start:start + 4].tolist()
            mean, std = statistics.fmean(group), statistics.stdev(group)  # stdev: n − 1, as torch.std
            for k, r in enumerate(group):
                expected = (r - mean) / (std + 1e-4) if scale else r - mean
                assert ours[start + k] == pytest.approx(expected, rel=1e-12, abs=1e-15), (scale, start + k)
    assert group_advantages(rewards.float(), 3).dtype == torch.float32
    with pytest.raises(MegatronSotaError) as raised:
        group_advantages(rewards[:10], 1)
    assert "at least 2 samples per group, found 1" in str(raised.value)
    with pytest.raises(MegatronSotaError, match="whole groups of 4; 2 are left over"):
        group_advantages(rewards[:10], 4, scale=False)


def test_explained_variance_matches_its_definition():
    returns, mask = _per_token(15), _mask()
    values = returns + _per_token(16, scale=0.5)
    r = [v for _, _, v in _response(returns)]
    d = [v - w for (_, _, v), (_, _, w) in zip(_response(returns), _response(values))]
    expected = 1.0 - statistics.pvariance(d) / statistics.pvariance(r)
    assert explained_variance(values, returns, mask) == pytest.approx(expected, rel=1e-12)
    assert explained_variance(returns, returns, mask) == 1.0
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))


VOCAB, PADDED = 200, 256


def _entropy_logits() -> torch.Tensor:
    """[2, 3, 256] logits whose padding rows (ids ≥ 200) are the largest: included, they would dominate the softmax."""
    logits = torch.randn(2, 3, PADDED, generator=torch.Generator().manual_seed(17)) * 3
    logits[..., VOCAB:] = 20.0
    return logits


def _full_vocabulary_entropy(logits: torch.Tensor):
    full = logits.clone().requires_grad_()
    entropy = torch.distributions.Categorical(logits=full[..., :VOCAB]).entropy()
    entropy.backward(torch.linspace(0.5, 1.5, entropy.numel()).view_as(entropy))
    return entropy.detach(), full.grad


def test_token_entropy_matches_categorical_over_the_tokenizer_vocabulary():
    logits = _entropy_logits()
    expected, expected_grad = _full_vocabulary_entropy(logits)
    ours_in = logits.clone().requires_grad_()
    ours = token_entropy(ours_in, VOCAB)
    ours.backward(torch.linspace(0.5, 1.5, ours.numel()).view_as(ours))
    assert ours.dtype == torch.float32 and ours.shape == (2, 3)
    torch.testing.assert_close(ours.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_in.grad, expected_grad, rtol=1e-5, atol=1e-7)


def _tp2_entropy(rank: int, logits: torch.Tensor) -> tuple:
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.runtime.session import distributed_session

    with distributed_session(ParallelConfig(tp=2), "cpu", 1, seed=0):
        shard = logits.chunk(2, dim=-1)[rank].clone().requires_grad_()
        entropy = token_entropy(shard, VOCAB)
        entropy.backward(torch.linspace(0.5, 1.5, entropy.numel()).view_as(entropy))
        return entropy.detach(), shard.grad


def test_token_entropy_at_tp2_equals_the_full_vocabulary():
    from megatron_sota.runtime.local_ranks import run_distributed

    logits = _entropy_logits()
    logits[..., 100:128] = 9.0  # both halves hold the row maxima of some positions
    logits[1, 2, 130] = 30.0
    expected, expected_grad = _full_vocabulary_entropy(logits)
    ranks = run_distributed(_tp2_entropy, 2, logits)
    for entropy, _ in ranks:
        torch.testing.assert_close(entropy, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([grad for _, grad in ranks], dim=-1), expected_grad, rtol=1e-5, atol=1e-7)
