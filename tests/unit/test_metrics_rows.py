"""metrics.jsonl on resume: rows of steps after the resumed one are dropped, and the file is replaced whole or not at all."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from megatron_sota import atomic_files
from megatron_sota.training.metrics import drop_rows_after


def _write_rows(run_dir, steps) -> str:
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path, "w") as handle:
        handle.writelines(json.dumps({"step": s, "loss": 10.0 / s}) + "\n" for s in steps)
    return path


def test_rows_after_the_resumed_step_are_dropped(tmp_path):
    path = _write_rows(tmp_path, range(1, 7))
    assert drop_rows_after(str(tmp_path), 4) == 2
    with open(path) as handle:
        assert [json.loads(line)["step"] for line in handle] == [1, 2, 3, 4]
    assert drop_rows_after(str(tmp_path), 4) == 0 and os.listdir(tmp_path) == ["metrics.jsonl"]
    assert drop_rows_after(str(tmp_path / "no_run_yet"), 4) == 0


def test_a_failed_rewrite_keeps_every_row_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = _write_rows(tmp_path, range(1, 7))
    before = pathlib.Path(path).read_text()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_files.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        drop_rows_after(str(tmp_path), 2)
    assert pathlib.Path(path).read_text() == before and os.listdir(tmp_path) == ["metrics.jsonl"]
