"""Advantage estimates for PPO and GRPO: masked statistics, whitening, GAE over response tokens, group baselines.

Pure tensor functions on one process's rows; they must not run models, read configs or reduce across ranks.

Layout: per-token tensors are [rows, T] in next-token order (position t scores token t+1); `mask` (bool or 0/1)
is 1 on a row's response positions, one contiguous run per row (possibly empty). Values outside the mask are
never read (they may be padding garbage, even nan) and results there are 0.
"""

from __future__ import annotations

import torch

from megatron_sota.errors import MegatronSotaError


def response_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask as bool after checking that each row's ones form one run: GAE's backward sweep and the reward's
    placement on the last response token both rely on it, and a gap would silently cut an episode in two."""
    mask = mask.bool()
    starts = mask.clone()
    starts[:, 1:] &= ~mask[:, :-1]  # a 1 whose left neighbour is 0 opens a run
    split = (starts.sum(dim=1) > 1).nonzero().flatten().tolist()
    if split:
        raise MegatronSotaError(
            f"response mask: expected one contiguous run of response positions per row; rows {split} have gaps"
        )
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over the masked elements of the whole tensor (nan when the mask is empty)."""
    mask = mask.bool()
    return values.masked_fill(~mask, 0).sum() / mask.sum().to(values.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked elements; unbiased: with Bessel's correction n/(n−1) (TRL 1.12's masked_var)."""
    mask = mask.bool()
    count, minimum = int(mask.sum()), 2 if unbiased else 1
    if count < minimum:
        raise MegatronSotaError(
            f"masked variance: expected at least {minimum} masked elements, found {count} "
            "(a batch of one response token cannot be whitened)"
        )
    centred = values - masked_mean(values, mask)
    variance = masked_mean(centred * centred, mask)
    return variance * (count / (count - 1)) if unbiased else variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(values − mean) / sqrt(var + eps) over the masked elements of the whole tensor (var unbiased);
    shift_mean=False keeps the mean (only the scale changes); 0 outside the mask."""
    mask = mask.bool()
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened.masked_fill(~mask, 0)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [rows, T] by generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438):
    δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}, returns = A + V.

    The episode ends at a row's last response position (the value after it is 0), so the sweep restarts
    wherever the mask is 0; one step of the sweep handles every row at once.
    """
    mask = response_mask(mask)
    rewards = rewards.masked_fill(~mask, 0)
    values = values.masked_fill(~mask, 0)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # 0 past the last response token
    deltas = rewards + gamma * next_values - values
    following = torch.zeros_like(deltas[:, 0])
    backwards = []
    for t in range(deltas.shape[1] - 1, -1, -1):
        following = (deltas[:, t] + gamma * lam * following).masked_fill(~mask[:, t], 0)
        backwards.append(following)
    advantages = torch.stack(backwards[::-1], dim=1)
    return advantages, advantages + values


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """[n] group-relative advantages (GRPO, Shao et al. 2024, arXiv:2402.03300): rows are consecutive groups of
    `group_size` samples of one prompt; (r − group mean) / (group std + eps), std unbiased (torch.std's default,
    as TRL's GRPOTrainer); scale=False removes the mean only (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783)."""
    problems = []
    if rewards.dim() != 1:
        problems.append(f"rewards: expected one score per sample, shape [n]; found shape {list(rewards.shape)}")
    if group_size < 1:
        problems.append(f"group_size: expected at least 1, found {group_size}")
    elif rewards.numel() % group_size:
        problems.append(
            f"group_size: expected the {rewards.numel()} rewards to be whole groups of {group_size}; "
            f"{rewards.numel() % group_size} are left over"
        )
    if scale and group_size < 2:
        problems.append(f"group_size: dividing by the group's std needs at least 2 samples per group, found {group_size}")
    if problems:
        raise MegatronSotaError("group advantages:\n  " + "\n  ".join(problems))
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.flatten()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[returns − values] / Var[returns] over the masked elements: 1 for a perfect critic, 0 for one that
    predicts the mean, negative for a worse one; nan when the returns do not vary."""
    mask = mask.bool()
    returns_variance = float(masked_var(returns, mask, unbiased=False))
    if returns_variance == 0:
        return float("nan")
    return 1.0 - float(masked_var(returns - values, mask, unbiased=False)) / returns_variance
