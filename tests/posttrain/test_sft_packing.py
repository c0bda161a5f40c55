"""SFT rows: best-fit decreasing packing, the row layout (targets, masks, positions, documents) and epochs."""

from __future__ import annotations

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.packing import best_fit_decreasing
from megatron_sota.posttrain.sft_data import SFTDataset, lay_out, row_sample
from tests.posttrain.examples import EOD, example, examples


def test_best_fit_puts_each_example_in_the_row_it_fills_most_tightly():
    # Longest first: 7 opens a row (room 3), both 4s share a second (room 2); the 2 goes where it leaves
    # no room (the second row), not to the first row that has room (first fit's choice).
    lengths = [2, 7, 4, 4]
    rows = best_fit_decreasing(lengths, 10)
    assert [[lengths[i] for i in row] for row in rows] == [[7], [4, 4, 2]]


def test_best_fit_places_every_example_once_within_capacity_and_fills_rows():
    lengths = [len(e.ids) for e in examples(200, seed=3)]
    rows = best_fit_decreasing(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # Within one row of the bound any packing has: the tokens over the row length.
    assert len(rows) <= -(-sum(lengths) // 64) + 1


def test_a_conversation_longer_than_the_row_is_refused_with_its_record():
    with pytest.raises(MegatronSotaError, match=r"data.jsonl:7: the conversation is 65 tokens long.*seq_length=64"):
        lay_out([example(range(10), 5), example(range(65), 5, "data.jsonl:7")], 64, True, "posttrain.train_files")


def test_a_packed_row_keeps_targets_masks_and_positions_inside_each_document():
    first, second = example([10, 11, 12, 13], prompt=2), example([20, 21, 22], prompt=1)
    sample = row_sample([first, second], 10, EOD, with_document_ids=True)
    assert sample["tokens"].tolist() == [10, 11, 12, 13, 20, 21, 22, EOD, EOD, EOD]
    # The last token of each document (13, 22) has no target: 13 never learns to predict 20.
    assert sample["labels"][:3].tolist() == [11, 12, 13] and sample["labels"][4:6].tolist() == [21, 22]
    assert sample["loss_mask"].tolist() == [0, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert sample["position_ids"].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]
    assert sample["document_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    alone = row_sample([first], 6, EOD, with_document_ids=False)
    assert "document_ids" not in alone and alone["loss_mask"].tolist() == [0, 1, 1, 0, 0, 0]


def test_epochs_reshuffle_the_rows_with_the_seed_and_validation_reads_them_once():
    rows = lay_out(examples(30, seed=1), 64, True, "k")
    n = len(rows.rows)
    train = SFTDataset(rows, 2 * n, EOD, True, seed=5)

    def key(sample):
        return tuple(sample["tokens"].tolist())

    epochs = [[key(train[i]) for i in range(e * n, (e + 1) * n)] for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert [key(SFTDataset(rows, n, EOD, True, seed=5)[i]) for i in range(n)] == epochs[0]  # a function of the index
    valid = SFTDataset(rows, n + 3, EOD, True, seed=None)
    assert [key(valid[i]) for i in range(n)] == [key(row_sample([rows.examples[j] for j in r], 64, EOD, True)) for r in rows.rows]
    assert all(valid[i]["loss_mask"].sum() == 0 for i in range(n, n + 3))
