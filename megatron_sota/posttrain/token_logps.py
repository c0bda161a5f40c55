"""Per-token and per-sequence log-probabilities of the next tokens, and the entropy of the next-token
distribution, from megatron-core's vocab-parallel logits.

Shared by DPO's loss, its reference pass and PPO so all see the same numbers; it must not reduce over pairs or
over ranks other than the TP group that holds one row's vocabulary.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region


def token_logps(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """log p(labels[b, s] | prefix), [b, s] float32, from this TP rank's logits [b, s, padded_vocab / tp].

    The softmax runs over the tokenizer's `vocab_size` ids only. GPTModel called with `labels`
    would include the output layer's padding rows (zero rows after an import from Hugging Face,
    so logits of 0), and the log-probs would then differ from those of the exported model. No
    logits are gathered: megatron-core's vocab-parallel cross-entropy reduces over TP ranks.
    """
    logits = logits.float()
    local = logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * local
    padding_rows = torch.arange(start, start + local, device=logits.device) >= vocab_size
    if bool(padding_rows.any()):
        logits = logits.masked_fill(padding_rows, float("-inf"))
    else:
        logits = logits.clone()  # vocab_parallel_cross_entropy writes into its input
    return -tensor_parallel.vocab_parallel_cross_entropy(logits, labels)


def sequence_logps(per_token: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """[rows] sums of the per-token log-probs where loss_mask is 1 (the completion's tokens)."""
    return (per_token * loss_mask.to(per_token.dtype)).sum(dim=-1)


def token_entropy(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Entropy (nats) of the next-token distribution, [b, s] float32, over the tokenizer's `vocab_size` ids, from
    this TP rank's logits [b, s, padded_vocab / tp]; differentiable.

    H = log Σ e^(x−m) − Σ p·(x−m) with m the row's max: three sums over the vocabulary, each reduced over the TP
    group (no-ops at TP=1, and outside a distributed session, where the logits hold the whole vocabulary).
    The max only stabilises (H does not depend on it), so it is reduced without a gradient; the two sums are
    reduced by megatron-core's all-reduce whose backward is the identity, as every TP rank computes the same H.
    """
    logits = logits.float()
    local = logits.shape[-1]
    tp = parallel_state.model_parallel_is_initialized() and parallel_state.get_tensor_model_parallel_world_size() > 1
    start = parallel_state.get_tensor_model_parallel_rank() * local if tp else 0
    padding_rows = torch.arange(start, start + local, device=logits.device) >= vocab_size
    row_max = logits.detach().masked_fill(padding_rows, float("-inf")).max(dim=-1, keepdim=True).values
    if tp:
        torch.distributed.all_reduce(
            row_max, op=torch.distributed.ReduceOp.MAX, group=parallel_state.get_tensor_model_parallel_group()
        )
    shifted = (logits - row_max).masked_fill(padding_rows, 0)
    exp = torch.exp(shifted).masked_fill(padding_rows, 0)
    sums = torch.stack([exp.sum(dim=-1), (exp * shifted).sum(dim=-1)])
    if tp:
        sums = reduce_from_tensor_model_parallel_region(sums, parallel_state.get_tensor_model_parallel_group())
    total, weighted = sums[0], sums[1]
    return torch.log(total) - weighted / total
