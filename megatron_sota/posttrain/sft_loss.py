"""SFT's forward step: the next-token loss on the trained tokens, from log-probs over the tokenizer's ids only.

The loss the exported Hugging Face model (and TRL) computes; it must not lay out rows (sft_data.py) nor sum
differently from pretraining (training/step.py's masked_token_loss is the one masked sum).
"""

from __future__ import annotations

from functools import partial
from typing import Iterator, Optional

import torch

from megatron_sota.posttrain.token_logps import token_logps
from megatron_sota.training.step import ForwardStep, local_batch, masked_token_loss


def _loss(labels: torch.Tensor, loss_mask: torch.Tensor, vocab_size: int, logits: torch.Tensor):
    return masked_token_loss(loss_mask, -token_logps(logits, labels, vocab_size))


def _forward_step(
    device: torch.device, vocab_size: int, document_eod: Optional[int], data_iterator: Iterator[dict], model
):
    local = local_batch(next(data_iterator), device, document_eod)
    # No labels: megatron-core would return its own loss, whose softmax includes the padding rows.
    output = model(local["tokens"], local["position_ids"], local.get("document_ids"))
    return output, partial(_loss, local["labels"], local["loss_mask"], vocab_size)


def sft_forward_step(device: torch.device, vocab_size: int, document_eod: Optional[int] = None) -> ForwardStep:
    """Pretraining's forward step (same batch keys, document ids, CP split and (loss_sum, count, report)) with
    -log p(label) from token_logps: the softmax over the `vocab_size` ids the tokenizer has, without the output
    layer's padding rows (up to make_vocab_size_divisible_by x tp), which GPTModel called with labels would
    include; so the loss is that of the exported model whenever the vocabulary is not a multiple of that.

    Its cost: the last stage holds the micro-batch's logits [b, s, padded vocab / tp] in float32 (plus
    token_logps' masked copy) for the backward, and megatron-core's fused cross-entropy
    (kernels.cross_entropy) is not used; pretraining keeps them (training/step.py).
    """
    return partial(_forward_step, device, vocab_size, document_eod)
