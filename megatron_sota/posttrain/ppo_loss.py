"""PPO's per-token pieces: KL estimators, the KL-penalised reward, and the clipped policy and value losses as sums.

Pure tensor functions on one micro-batch; they must not run models or reduce across ranks (the trainer divides
the sums by the global token count). Layout as in advantages.py: [rows, T], next-token order, one response run per row.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.advantages import response_mask

KL_ESTIMATORS = ("k1", "k2", "k3")
"""Estimators of KL(π ‖ π_ref) from one sample's log-probs (Schulman, "Approximating KL divergence", 2020)."""


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) for tokens sampled from π, with log r = ref_logp − logp:
    k1 = −log r (unbiased, can be negative), k2 = ½(log r)² (biased, low variance), k3 = (r − 1) − log r
    (unbiased and never negative)."""
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio * log_ratio
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise MegatronSotaError(f"KL estimator: expected one of {', '.join(KL_ESTIMATORS)}; found {kind!r}")


def kl_penalised_rewards(
    scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float, kind: str,
) -> torch.Tensor:
    """[rows, T] per-token rewards: −β·KL estimate on response positions, plus each row's score at its last
    response position (the last real token: never on padding or on the prompt); 0 elsewhere."""
    mask = response_mask(mask)
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise MegatronSotaError(
            f"PPO rewards: rows {empty} have no response token; a response of zero tokens cannot carry a reward"
        )
    rewards = (-beta * kl_estimate(logp, ref_logp, kind)).masked_fill(~mask, 0)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).max(dim=1).values
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def _count(flags: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (flags & mask).sum().to(dtype)


def policy_loss_terms(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float,
) -> Dict[str, torch.Tensor]:
    """Sums over response tokens of PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347, eq. 7, negated):
    "loss" Σ max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − old_logp); "clipped" the number of tokens whose
    clipped term is strictly larger (the gradient is cut there); "ratio" Σ ρ; "approx_kl" Σ ½(logp − old_logp)².

    Only "loss" carries a gradient, and only through logp; the others are detached metrics.
    """
    mask = mask.bool()
    log_ratio = (logp - old_logp.detach()).masked_fill(~mask, 0)  # exp of padding garbage could be inf
    advantages = advantages.detach().masked_fill(~mask, 0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return {
        "loss": torch.maximum(unclipped, clipped).masked_fill(~mask, 0).sum(),
        "clipped": _count(clipped > unclipped, mask, logp.dtype).detach(),
        "ratio": ratio.masked_fill(~mask, 0).sum().detach(),
        "approx_kl": (0.5 * log_ratio * log_ratio).sum().detach(),
    }


def value_loss_terms(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: Optional[float],
) -> Dict[str, torch.Tensor]:
    """Sums over response tokens of the critic's loss: "loss" Σ ½·max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²)
    (the value clipping of Schulman et al.'s baselines ppo2, kept by TRL, OpenRLHF and verl), or Σ ½(V − R)² when
    clip is None; "clipped" the number of tokens whose clipped term is strictly larger. Gradient only through values."""
    mask = mask.bool()
    values = values.masked_fill(~mask, 0)
    old_values = old_values.detach().masked_fill(~mask, 0)
    returns = returns.detach().masked_fill(~mask, 0)
    unclipped = (values - returns) ** 2
    if clip is None:
        return {"loss": 0.5 * unclipped.sum(), "clipped": torch.zeros((), dtype=values.dtype, device=values.device)}
    clipped = (torch.clamp(values, old_values - clip, old_values + clip) - returns) ** 2
    return {
        "loss": 0.5 * torch.maximum(unclipped, clipped).sum(),
        "clipped": _count(clipped > unclipped, mask, values.dtype).detach(),
    }
