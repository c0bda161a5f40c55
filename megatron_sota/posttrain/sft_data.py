"""SFT samples: encoded conversations laid out in rows of train.seq_length (packed or one per row), as the
fixed-shape dicts the trainer's loaders stack; the files -> records -> encodings glue is encode_files alone.

It must not tokenize or template by itself (posttrain/chat_template.py does) nor decide the loss (training/step.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence

import numpy as np
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import ChatTemplate, encode_sft_records
from megatron_sota.posttrain.packing import best_fit_decreasing
from megatron_sota.posttrain.records import read_sft_records

logger = logging.getLogger(__name__)


class EncodedLike(Protocol):
    """posttrain/chat_template.py's Encoded: token ids, whether each token is a target, and its record's file:line."""

    ids: Sequence[int]
    trained: Sequence[bool]
    where: str


def encode_files(
    paths: Sequence[str], chat_template: Optional[str], assistant_only: bool, tokenizer, max_tokens: int
) -> list:
    """Every record of `paths` rendered by the chat template into Encoded examples; one error listing every
    record (file:line) that cannot be trained on, a record longer than `max_tokens` among them."""
    template = ChatTemplate.load(chat_template, tokenizer)
    return encode_sft_records(read_sft_records(paths), template, tokenizer, assistant_only, max_tokens)


@dataclass(frozen=True)
class Rows:
    """Examples and which of them share each row."""

    examples: Sequence[EncodedLike]
    rows: List[List[int]]
    seq_length: int

    @property
    def efficiency(self) -> float:
        """Real tokens / row tokens."""
        return sum(len(e.ids) for e in self.examples) / max(len(self.rows) * self.seq_length, 1)


def lay_out(examples: Sequence[EncodedLike], seq_length: int, packing: bool, files_key: str) -> Rows:
    """Rows of `seq_length` tokens: best-fit decreasing packing, or one example per row."""
    for example in examples:
        if len(example.ids) > seq_length:
            raise MegatronSotaError(
                f"{example.where}: the conversation is {len(example.ids)} tokens long, more than "
                f"train.seq_length={seq_length} ({files_key}): shorten it, drop it or raise train.seq_length"
            )
        if len(example.ids) < 2 or len(example.trained) != len(example.ids):
            raise MegatronSotaError(
                f"{example.where}: expected at least 2 tokens and one trained flag per token, got "
                f"{len(example.ids)} tokens and {len(example.trained)} flags"
            )
    lengths = [len(e.ids) for e in examples]
    rows = best_fit_decreasing(lengths, seq_length) if packing else [[i] for i in range(len(examples))]
    return Rows(examples, rows, seq_length)


def row_sample(documents: Sequence[EncodedLike], seq_length: int, pad_id: int, with_document_ids: bool) -> dict:
    """One row: the documents back to back, then padding (its own document, no loss).

    labels[i] = ids[i + 1] and loss_mask[i] = trained[i + 1] within a document; a document's last token
    has no target, so no token learns to predict the next document's first. Positions restart per document.
    """
    tokens = np.full(seq_length, pad_id, dtype=np.int64)
    labels = np.full(seq_length, pad_id, dtype=np.int64)
    loss_mask = np.zeros(seq_length, dtype=np.float32)
    position_ids = np.zeros(seq_length, dtype=np.int64)
    ids_of = np.full(seq_length, len(documents), dtype=np.int64)
    start = 0
    for number, document in enumerate(documents):
        n = len(document.ids)
        span = slice(start, start + n)
        tokens[span] = document.ids
        labels[start : start + n - 1] = document.ids[1:]
        loss_mask[start : start + n - 1] = document.trained[1:]
        position_ids[span] = np.arange(n)
        ids_of[span] = number
        start += n
    position_ids[start:] = np.arange(seq_length - start)
    sample = {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(loss_mask),
        "position_ids": torch.from_numpy(position_ids),
    }
    if with_document_ids:
        sample["document_ids"] = torch.from_numpy(ids_of)
    return sample


class EpochOrder:
    """Which of `count` items global sample i reads: with `seed`, epoch after epoch of them, each epoch in its
    own seeded order; without, each once in order, then None (an empty sample) for every later i.

    It depends only on i, so a loader resumed at a consumed-sample count reads what a run from the start would have.
    """

    def __init__(self, count: int, seed: Optional[int]):
        self.count, self.seed = count, seed
        self._order: tuple[int, Optional[np.ndarray]] = (-1, None)

    def __call__(self, index: int) -> Optional[int]:
        epoch, at = divmod(index, self.count)
        if self.seed is None:
            return at if epoch == 0 else None
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.count))
        return int(self._order[1][at])


class SFTDataset(torch.utils.data.Dataset):
    """`num_samples` rows in EpochOrder (with `seed`: epochs of the rows; without: the rows once in file order,
    then empty rows, no loss). Document ids only for packed rows: one causal document per row needs none."""

    def __init__(self, rows: Rows, num_samples: int, pad_id: int, packed: bool, seed: Optional[int]):
        self.rows, self.num_samples, self.pad_id, self.packed = rows, num_samples, pad_id, packed
        self.order = EpochOrder(len(rows.rows), seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        row = self.order(index)
        members = self.rows.rows[row] if row is not None else []
        documents = [self.rows.examples[i] for i in members]
        return row_sample(documents, self.rows.seq_length, self.pad_id, self.packed)
