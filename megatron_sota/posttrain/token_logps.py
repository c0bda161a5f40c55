"""Per-token and per-sequence log-probabilities of the next tokens, from megatron-core's vocab-parallel logits.

Shared by DPO's loss and its reference pass so both see the same numbers; it must not reduce over pairs or ranks.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel


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
