"""DPO's sigmoid loss (β, label smoothing, optional SFT term) and its metrics over a micro-batch of preference pairs.

Pure tensor functions plus the loss function megatron-core's schedule calls; it must not run models or reduce across ranks.

Micro-batch layout: n pairs are 2n rows in pair_data.pair_rows' order, the chosen completion of pair k at
row k and the rejected one at row n + k (TRL's collator order); labels[i] = tokens[i + 1] and loss_mask[i] = 1
where tokens[i + 1] is a completion token. A row's log-prob is the sum of its completion tokens' log-probs
(TRL's, huggingface/trl 1.16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from megatron.core import parallel_state

from megatron_sota.posttrain.token_logps import sequence_logps, token_logps

METRICS = (
    "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
)
"""What `dpo_loss` reports, under TRL's names; each a (sum, count) pair so that a run can average over all pairs."""


@dataclass(frozen=True)
class DPOSettings:
    beta: float = 0.1
    """Strength of the pull towards the reference (TRL's default 0.1)."""
    label_smoothing: float = 0.0
    """ε, the assumed probability that a preference label is flipped (conservative DPO):
    L = −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ). TRL 1.16 applies ε this way in its 'aot' losses only;
    its 'sigmoid' loss is the ε = 0 case."""
    sft_weight: float = 0.0
    """α of an added α·NLL of the chosen completions (TRL 1.16: loss_type=['sigmoid', 'sft'],
    loss_weights=[1, α]); the NLL is averaged over the chosen completion tokens of the micro-batch."""


def split_pairs(rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a per-row tensor laid out as pair_rows' blocks: n chosen rows, then n rejected."""
    if rows.shape[0] % 2:
        raise ValueError(f"a DPO micro-batch has a chosen and a rejected row per pair; found {rows.shape[0]} rows")
    half = rows.shape[0] // 2
    return rows[:half], rows[half:]


def dpo_loss(
    per_token_logps: torch.Tensor, loss_mask: torch.Tensor, reference: torch.Tensor, settings: DPOSettings,
) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """(sum over the n pairs of the pair losses, n as an int tensor, report) for megatron-core's schedule.

    per_token_logps, loss_mask: [2n, s] (layout in the module docstring); reference: [n, 2] the reference
    model's log-probs of (chosen, rejected). The report maps each name of METRICS to a float64
    tensor [sum, count]: sums over micro-batches and data-parallel ranks divided give the mean over
    all pairs of the global batch, which is what TRL logs when its micro-batches are equally large.

    Why a sum and a count of pairs: with calculate_per_token_loss, megatron-core neither divides
    a micro-batch's loss by its count nor by the number of micro-batches; finalize_model_grads
    adds the counts over micro-batches and DP ranks and scales the gradients by 1 / total. The
    "tokens" being pairs, the gradient is that of the mean loss per pair over the global batch,
    as the DPO loss is defined (TRL's mean over the pairs of a batch), independent of how many
    tokens a completion has. With the SFT term each pair of the micro-batch carries α times the
    micro-batch's mean chosen-token NLL, so the mean per pair is TRL's micro-batch loss exactly.
    """
    mask = loss_mask.to(per_token_logps.dtype)
    logps = sequence_logps(per_token_logps, mask)
    chosen, rejected = split_pairs(logps)
    reference = reference.to(device=logps.device, dtype=logps.dtype)
    chosen_ratio = chosen - reference[:, 0]
    rejected_ratio = rejected - reference[:, 1]
    scaled = settings.beta * (chosen_ratio - rejected_ratio)
    eps = settings.label_smoothing
    pair_losses = -(1.0 - eps) * F.logsigmoid(scaled)
    if eps:
        pair_losses = pair_losses - eps * F.logsigmoid(-scaled)
    pairs = chosen.shape[0]
    loss_sum = pair_losses.sum()
    if settings.sft_weight:
        chosen_tokens, chosen_mask = split_pairs(per_token_logps)[0], split_pairs(mask)[0]
        # TRL's 'sft' term: the mean NLL over every chosen completion token of the (micro-)batch.
        nll = -(chosen_tokens * chosen_mask).sum() / chosen_mask.sum().clamp(min=1)
        loss_sum = loss_sum + settings.sft_weight * pairs * nll
    with torch.no_grad():
        chosen_rewards = settings.beta * chosen_ratio
        rejected_rewards = settings.beta * rejected_ratio
        sums = (
            loss_sum, chosen_rewards.sum(), rejected_rewards.sum(), (chosen_rewards > rejected_rewards).sum(),
            (chosen_rewards - rejected_rewards).sum(), chosen.sum(), rejected.sum(),
        )
        report = {name: torch.stack([value.detach().to(torch.float64), torch.tensor(float(pairs), dtype=torch.float64, device=logps.device)])
                  for name, value in zip(METRICS, sums)}
    return loss_sum, torch.tensor(pairs, dtype=torch.int, device=logps.device), report


def dpo_loss_func(
    labels: torch.Tensor, loss_mask: torch.Tensor, reference: torch.Tensor, vocab_size: int, settings: DPOSettings,
    logits: torch.Tensor,
):
    """megatron-core's loss function for a DPO micro-batch (bind all but `logits`, the last stage's output).

    The model is called without labels, so that the log-probs exclude the padding rows of the
    output layer (see token_logps). Context parallelism would split each row's sum across ranks
    before the non-linear loss: refused.
    """
    if parallel_state.get_context_parallel_world_size() > 1:
        raise NotImplementedError("DPO needs each row's whole completion on one rank: context_parallel_size must be 1")
    return dpo_loss(token_logps(logits, labels, vocab_size), loss_mask, reference, settings)


def mean_metrics(reports: List[Dict[str, torch.Tensor]], group=None) -> Dict[str, float]:
    """The mean of each metric over the micro-batches' reports of this rank, and over `group`'s ranks
    (the data-parallel group) when given; call it on the last pipeline stage, where the reports are."""
    names = sorted(reports[0])
    totals = torch.stack([sum(r[name].to(torch.float64) for r in reports) for name in names])
    if group is not None:
        torch.distributed.all_reduce(totals, group=group)
    return {name: (totals[i, 0] / totals[i, 1]).item() for i, name in enumerate(names)}
