"""In-training export bookkeeping: which steps export, pinning against pruning, failures reported with their log."""

from __future__ import annotations

import pytest

from megatron_sota.checkpointing import paths
from megatron_sota.errors import MegatronSotaError
from megatron_sota.training.hf_export import BackgroundExporter


def test_due_every_n_steps_and_at_the_end_only_when_enabled(tmp_path):
    exporter = BackgroundExporter(str(tmp_path), every=3, dtype="bf16", pinned=set(), is_rank0=True)
    assert [s for s in range(1, 8) if exporter.due(s, last=s == 7)] == [3, 6, 7]
    never = BackgroundExporter(str(tmp_path), every=0, dtype="bf16", pinned=set(), is_rank0=True)
    assert not any(never.due(s, last=True) for s in range(1, 8))


def test_a_failed_export_unpins_its_checkpoint_and_fails_the_close_naming_the_log(tmp_path):
    pinned = set()
    exporter = BackgroundExporter(str(tmp_path), every=1, dtype="bf16", pinned=pinned, is_rank0=True)
    exporter.start(5)  # there is no iter_0000005: the export process fails
    assert pinned == {5}
    with pytest.raises(MegatronSotaError, match=r"iter_0000005 \(exit code 1; log .*iter_0000005.log\): error: --load=.*no such file"):
        exporter.close()
    assert pinned == set()


def test_pruning_keeps_pinned_checkpoints(tmp_path):
    for step in (1, 2, 3):
        (tmp_path / f"iter_{step:07d}").mkdir()
    paths.write_tracker(str(tmp_path), 3)
    assert paths.prune(str(tmp_path), keep=1, pinned={1}) == [2]
    assert paths.complete_iterations(str(tmp_path)) == [1, 3]
