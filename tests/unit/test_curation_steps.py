"""The small datatrove steps of a curation run, each on hand-made documents."""

from __future__ import annotations

import gzip
import json

import pytest
from datatrove.data import Document

from megatron_sota.curation.quality_split import HighQualityCopy
from megatron_sota.curation.rank_reader import RankFileReader
from megatron_sota.curation.staged_writer import StagedJsonlWriter
from megatron_sota.curation.tally import Tally, TokenCounter


def _docs(scores):
    return [Document(text=f"doc {i}", id=str(i), metadata={"quality_score": s, "tokens": 10 * (i + 1)})
            for i, s in enumerate(scores)]


def _read(path):
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_high_quality_copy_takes_scores_at_or_above_the_threshold_and_passes_everything_on(tmp_path):
    step = HighQualityCopy(str(tmp_path / "hq"), threshold=0.7)
    passed = list(step.run(iter(_docs([0.5, 0.7, 0.69999, 0.9])), rank=3))
    assert [d.id for d in passed] == ["0", "1", "2", "3"]
    assert [r["id"] for r in _read(tmp_path / "hq" / "00003.jsonl.gz")] == ["1", "3"]


def test_staged_writer_renames_only_a_finished_file(tmp_path):
    writer = StagedJsonlWriter(str(tmp_path / "out"))
    assert [d.id for d in writer.run(iter(_docs([1.0, 1.0])), rank=0)] == ["0", "1"]
    assert [r["id"] for r in _read(tmp_path / "out" / "00000.jsonl.gz")] == ["0", "1"]

    def failing():
        yield from _docs([1.0])
        raise OSError("disk went away")

    with pytest.raises(OSError):
        list(StagedJsonlWriter(str(tmp_path / "out")).run(failing(), rank=1))
    assert not (tmp_path / "out" / "00001.jsonl.gz").exists()
    assert (tmp_path / "out" / ".incomplete" / "00001.jsonl.gz").exists()


def test_tally_adds_documents_and_tokens_and_token_counter_counts_words_without_a_tokenizer():
    docs = list(TokenCounter().run(iter([Document(text="one two  three\nfour", id="a")])))
    assert docs[0].metadata["tokens"] == 4
    tally = Tally("length")
    list(tally.run(iter(_docs([1.0, 1.0, 1.0]))))
    assert tally.stats["documents"].total == 3 and tally.stats["tokens"].total == 60
    assert str(tally).endswith(": tally length")


def test_rank_file_reader_reads_its_own_rank_and_nothing_when_that_task_kept_nothing(tmp_path):
    list(StagedJsonlWriter(str(tmp_path)).run(iter(_docs([0.1, 0.2])), rank=1))
    assert [d.id for d in RankFileReader(str(tmp_path)).run(rank=1)] == ["0", "1"]
    assert list(RankFileReader(str(tmp_path)).run(rank=0)) == []
