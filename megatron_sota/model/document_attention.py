"""Causal attention that stays inside each document of packed rows, without a [seq, seq] mask.

Documents are the contiguous runs of equal ids in a [batch, seq] tensor; this must not change attention within one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

Causal = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""Causal SDPA on [batch, heads, seq, head_dim] query, key, value (no mask)."""


def document_ids(tokens: torch.Tensor, eod: int) -> torch.Tensor:
    """[batch, seq] ids of the document each token belongs to: a new document starts after every `eod`
    (the eod itself ends the one before, as in Megatron-LM's reset_attention_mask)."""
    ends = tokens == eod
    return torch.cumsum(ends, dim=1) - ends.long()


@dataclass(frozen=True)
class DocumentPlan:
    """Where each token goes in a buffer of groups: documents of similar length, each group one causal
    SDPA batch [documents, heads, padded length, head_dim], a short document followed by zeros that
    only the padding queries (discarded) see, since they lie after every real query."""

    groups: List[Tuple[int, int, int]]
    """(first row in the buffer, documents, padded length) of each group."""
    slots: torch.Tensor
    """[batch * seq] each token's row in the buffer (flat token index: row * seq + position)."""
    one_per_row: bool
    """Every row is a single document: plain causal attention, nothing to regroup."""

    @property
    def buffer_rows(self) -> int:
        first, documents, padded = self.groups[-1]
        return first + documents * padded


def plan_documents(ids: torch.Tensor) -> DocumentPlan:
    """Groups the documents of `ids` [batch, seq] by the power of two their length rounds up to.

    A group is padded to its longest document, less than twice any of its lengths, so the buffer holds
    under twice the tokens and there are at most log2(seq) + 1 SDPA calls, whatever the number of
    documents. Runs on the host (one copy of the ids); the slots go back to the ids' device.
    """
    batch, seq = ids.shape
    host = ids.detach().cpu()
    starts_new = torch.ones(batch, seq, dtype=torch.bool)
    starts_new[:, 1:] = host[:, 1:] != host[:, :-1]  # every row starts a document: none spans two rows
    starts_new = starts_new.view(-1)
    starts = starts_new.nonzero().squeeze(1)
    lengths = torch.diff(starts, append=torch.tensor([batch * seq]))
    rounded = torch.where(lengths > 1, torch.ceil(torch.log2(lengths.double())), torch.zeros(()).double()).long()
    base = torch.empty_like(starts)  # each document's first row in the buffer
    groups, first = [], 0
    for power in rounded.unique().tolist():
        members = (rounded == power).nonzero().squeeze(1)
        padded = int(lengths[members].max())
        base[members] = first + torch.arange(members.numel()) * padded
        groups.append((first, members.numel(), padded))
        first += members.numel() * padded
    document = torch.cumsum(starts_new, 0) - 1
    slots = base[document] + torch.arange(batch * seq) - starts[document]
    return DocumentPlan(groups, slots.to(ids.device), one_per_row=starts.numel() == batch)


_last: Tuple[Optional[torch.Tensor], int, Optional[DocumentPlan]] = (None, -1, None)
"""The ids tensor planned last, its version, and its plan."""


def plan_for(ids: torch.Tensor) -> DocumentPlan:
    """plan_documents(ids), once per micro-batch: every layer (and a recomputed forward) receives the same ids
    tensor, so the host copy and the grouping happen once, not once per layer (on GPU: one sync per layer)."""
    global _last
    tensor, version, plan = _last
    if tensor is not ids or version != ids._version:
        plan = plan_documents(ids)
        _last = (ids, ids._version, plan)
    return plan


class _Collect(torch.autograd.Function):
    """`rows.index_select(0, slots)` for slots without repeats, whose backward copies the gradient back
    (index_select's own adds it, several times slower on CPU)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(slots)
        ctx.num_rows = rows.size(0)
        return rows.index_select(0, slots)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (slots,) = ctx.saved_tensors
        return grad.new_zeros((ctx.num_rows, *grad.shape[1:])).index_copy_(0, slots, grad), None


def document_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: DocumentPlan, causal: Causal
) -> torch.Tensor:
    """Attention of [seq, batch, heads, head_dim] q, k, v within each planned document: [seq, batch, heads * head_dim]."""
    seq, batch = q.shape[:2]
    buffers = []
    for t in (q, k, v):
        # [seq, batch, heads, d] -> [batch * seq, heads, d], then each token to its slot (zeros elsewhere).
        tokens = t.transpose(0, 1).reshape(batch * seq, t.size(2), t.size(3))
        buffers.append(tokens.new_zeros(plan.buffer_rows, t.size(2), t.size(3)).index_copy(0, plan.slots, tokens))
    # split, not one narrow per group: split's backward is one concatenation, a narrow's a zero-filled buffer each.
    sizes = [documents * padded for _, documents, padded in plan.groups]
    outputs = []
    for (_, documents, padded), *group in zip(plan.groups, *(b.split(sizes) for b in buffers)):
        group = (g.view(documents, padded, *g.shape[1:]).transpose(1, 2) for g in group)
        outputs.append(causal(*group).transpose(1, 2).reshape(documents * padded, -1))
    tokens = _Collect.apply(torch.cat(outputs), plan.slots)
    return tokens.view(batch, seq, -1).transpose(0, 1).contiguous()
