"""The reward model's loss and metrics as pure tensor functions: scores at each row's last real token,
the Bradley-Terry pair loss (optional margin, optional centering term) and TRL's RM metrics.

They see tensors only; they must not know the model, the parallel layout or how a batch was built.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from megatron_sota.errors import MegatronSotaError


def last_real_token_scores(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[b, s] or [b, s, 1] per-token scores, [b, s] mask of real (non-padding) tokens -> [b] scores at
    each row's rightmost real token (left or right padding alike)."""
    if scores.dim() == 3:
        scores = scores.squeeze(-1)
    if scores.shape != real.shape:
        raise MegatronSotaError(f"scores {list(scores.shape)} and the real-token mask {list(real.shape)} differ in shape")
    real = real.bool()
    empty = (~real.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise MegatronSotaError(f"rows {empty} of the batch hold no real token: nothing to score")
    positions = torch.arange(real.shape[1], device=real.device)
    last = (positions * real).argmax(dim=1)
    return scores.gather(1, last.unsqueeze(1)).squeeze(1)


def pair_losses(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: Optional[torch.Tensor] = None, centering: float = 0.0
) -> torch.Tensor:
    """[pairs] Bradley-Terry loss of each pair: -log sigma(r_c - r_r - margin) + centering * (r_c + r_r)^2.

    Their mean is TRL's RewardTrainer loss (its centering term is the mean of (r_c + r_r)^2 over pairs,
    so it averages with the rest); sum them and divide by the global pair count across micro-batches.
    """
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise MegatronSotaError(f"chosen {list(chosen.shape)} and rejected {list(rejected.shape)}: expected two [pairs] tensors")
    difference = chosen.float() - rejected.float()
    if margin is not None:
        difference = difference - margin.to(difference)
    losses = -torch.nn.functional.logsigmoid(difference)
    if centering:
        losses = losses + centering * (chosen.float() + rejected.float()) ** 2
    return losses


def reward_metric_sums(chosen: torch.Tensor, rejected: torch.Tensor) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """TRL's RM metrics as (sum, count) of one micro-batch, to be summed over micro-batches and ranks:
    accuracy (r_c > r_r, ties count as wrong), margin (r_c - r_r) per pair, mean_reward over every score."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    pairs = torch.tensor(float(chosen.numel()), device=chosen.device)
    return {
        "accuracy": ((chosen > rejected).float().sum(), pairs),
        "margin": ((chosen - rejected).sum(), pairs),
        "mean_reward": (chosen.sum() + rejected.sum(), 2 * pairs),
    }


def reward_extremes(chosen: torch.Tensor, rejected: torch.Tensor) -> Dict[str, torch.Tensor]:
    """TRL's min_reward and max_reward of one micro-batch (reduce them with MIN / MAX, not as means)."""
    every = torch.cat([chosen.detach().float(), rejected.detach().float()])
    return {"min_reward": every.min(), "max_reward": every.max()}
