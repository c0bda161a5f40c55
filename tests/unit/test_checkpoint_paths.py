"""Checkpoint directory bookkeeping: tracker, latest complete checkpoint, leftovers, retention."""

from __future__ import annotations

import os

import pytest

from megatron_sota.checkpointing import paths
from megatron_sota.config.run import CheckpointConfig
from megatron_sota.checkpointing.manager import resolve_resume
from megatron_sota.errors import MegatronSotaError


def _make(tmp_path, *steps, partial=()):
    for step in steps:
        os.makedirs(paths.iter_dir(str(tmp_path), step))
    for step in partial:
        os.makedirs(paths.partial_dir(str(tmp_path), step))
    return str(tmp_path)


def test_tracker_round_trip_and_no_temporary_left(tmp_path):
    paths.write_tracker(str(tmp_path), 1200)
    assert paths.read_tracker(str(tmp_path)) == 1200
    assert os.listdir(tmp_path) == [paths.TRACKER]


def test_latest_is_the_tracked_one_or_a_newer_complete_one(tmp_path):
    root = _make(tmp_path, 10, 20, partial=(30,))
    paths.write_tracker(root, 10)
    # a save killed between its rename and the tracker update: iter 20 is complete, use it
    assert paths.latest_complete(root) == paths.iter_dir(root, 20)


def test_partial_directories_never_count_and_are_removed(tmp_path):
    root = _make(tmp_path, partial=(30,))
    assert paths.latest_complete(root) is None
    assert paths.remove_partials(root) == ["iter_0000030.partial"]
    assert os.listdir(root) == []


def test_prune_keeps_the_newest_and_the_tracked(tmp_path):
    root = _make(tmp_path, 10, 20, 30, 40)
    paths.write_tracker(root, 40)
    assert paths.prune(root, keep=2) == [10, 20]
    assert paths.complete_iterations(root) == [30, 40]


def test_garbled_tracker_is_reported_with_its_content(tmp_path):
    (tmp_path / paths.TRACKER).write_text("release\n")
    with pytest.raises(MegatronSotaError, match="expected an iteration number, found 'release'"):
        paths.read_tracker(str(tmp_path))


def test_resume_modes(tmp_path):
    root = _make(tmp_path / "ckpt", 5)
    paths.write_tracker(root, 5)
    assert resolve_resume(CheckpointConfig(resume="never"), root) is None
    assert resolve_resume(CheckpointConfig(resume="auto"), root) == paths.iter_dir(root, 5)
    assert resolve_resume(CheckpointConfig(resume="auto"), str(tmp_path / "empty")) is None
    assert resolve_resume(CheckpointConfig(resume=root), "/elsewhere") == paths.iter_dir(root, 5)
