"""Preference pairs as fixed-shape samples for the pair objectives (reward model, DPO): one sample per pair,
row 0 the chosen sequence, row 1 the rejected one, and pair_rows() to lay a micro-batch of them out for the model.

It must not template or tokenize by itself (posttrain/chat_template.py does) nor compute any loss.

A sample (PairDataset[i]) is a dict of tensors:
  tokens, labels, position_ids  [2, seq] int64    row_sample()'s single-document row: labels[j] = ids[j + 1]
  loss_mask                     [2, seq] float32  1 where labels[j] is a completion token (`trained`), else 0
  real_mask                     [2, seq] bool     the sequence's own tokens (False on padding)
  pair_index                    []       int64    the pair's position in its file list (-1: an empty sample)
  margin                        []       float32  the record's `margin`, 0 when it has none
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from megatron_sota.posttrain.chat_template import ChatTemplate, Encoded, encode_preference_records
from megatron_sota.posttrain.records import read_preference_records
from megatron_sota.posttrain.sft_data import EpochOrder, row_sample

SEQUENCE_KEYS = ("tokens", "labels", "loss_mask", "position_ids", "real_mask")
"""The [2, seq] keys of a sample (the [n, 2, seq] keys of a micro-batch)."""


@dataclass(frozen=True)
class Pair:
    chosen: Encoded
    rejected: Encoded
    margin: float
    """The record's margin (0.0 when it gave none)."""


def encode_pair_files(paths: Sequence[str], chat_template: Optional[str], tokenizer, max_tokens: int) -> list:
    """Every preference record of `paths` as a Pair, in file order; one error listing every record (file:line)
    that cannot be trained on, one with a sequence longer than `max_tokens` among them."""
    records = read_preference_records(paths)
    template = ChatTemplate.load(chat_template, tokenizer)
    encoded = encode_preference_records(records, template, tokenizer, max_tokens)
    return [Pair(chosen, rejected, record.margin or 0.0) for record, (chosen, rejected) in zip(records, encoded)]


def pair_sample(pair: Optional[Pair], index: int, seq_length: int, pad_id: int) -> dict:
    """One sample (see the module docstring); `pair` None gives an empty one (no real token, pair_index -1)."""
    documents = [[], []] if pair is None else [[pair.chosen], [pair.rejected]]
    rows = [row_sample(row, seq_length, pad_id, False) for row in documents]
    lengths = [sum(len(encoded.ids) for encoded in row) for row in documents]
    sample = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
    sample["real_mask"] = torch.arange(seq_length)[None, :] < torch.tensor(lengths)[:, None]
    sample["pair_index"] = torch.tensor(-1 if pair is None else index, dtype=torch.int64)
    sample["margin"] = torch.tensor(0.0 if pair is None else pair.margin, dtype=torch.float32)
    return sample


class PairDataset(torch.utils.data.Dataset):
    """`num_samples` pair samples in EpochOrder (posttrain/sft_data.py): with `seed`, epochs of the pairs, each
    in its own seeded order; without, the pairs once in file order, then empty samples (pair_index -1)."""

    def __init__(self, pairs: Sequence[Pair], num_samples: int, seq_length: int, pad_id: int, seed: Optional[int]):
        self.pairs, self.num_samples, self.seq_length, self.pad_id = pairs, num_samples, seq_length, pad_id
        self.order = EpochOrder(len(pairs), seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} of {self.num_samples}")  # also ends iteration over the dataset
        at = self.order(index)
        pair = None if at is None else self.pairs[at]
        return pair_sample(pair, -1 if at is None else at, self.seq_length, self.pad_id)


def pair_rows(batch: dict) -> dict:
    """A micro-batch of n pair samples -> 2n model rows: every [n, 2, seq] tensor becomes [2n, seq] with the n
    chosen rows first, then the n rejected rows in the same pair order (row k and row n + k are pair k; TRL's
    collator order, so scores.chunk(2) splits them); pair_index and margin stay [n]."""
    return {key: value.transpose(0, 1).reshape(-1, value.shape[-1]) if key in SEQUENCE_KEYS else value
            for key, value in batch.items()}
