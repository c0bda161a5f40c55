"""megatron_sota.atomic_files, the project's one way to replace a file: all or nothing, permissions kept, no shared temporaries."""

from __future__ import annotations

import json
import os
import stat

import pytest

from megatron_sota.atomic_files import atomic_output, write_bytes, write_json, write_text


def test_a_failed_write_leaves_the_target_untouched_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with atomic_output(str(target)) as handle:
            handle.write("new, half written")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["report.json"]

    fresh = tmp_path / "never.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(fresh), "wb") as handle:
            handle.write(b"partial")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["report.json"]


def test_an_unserialisable_object_fails_before_any_file_is_touched(tmp_path):
    target = tmp_path / "out.json"
    write_json(str(target), {"a": 1})
    with pytest.raises(TypeError):
        write_json(str(target), {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["out.json"]


def test_the_permissions_of_a_replaced_file_are_kept(tmp_path):
    target = tmp_path / "latest_checkpointed_iteration.txt"
    target.write_text("1\n")
    os.chmod(target, 0o640)
    write_text(str(target), "2\n")
    assert target.read_text() == "2\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_a_new_file_gets_the_umask_permissions_not_the_private_temporary_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        write_bytes(str(tmp_path / "new.bin"), b"\x00\x01")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o644
    assert (tmp_path / "new.bin").read_bytes() == b"\x00\x01"


def test_concurrent_writers_of_one_target_never_share_a_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    with atomic_output(str(target)) as first:
        first.write("first")
        with atomic_output(str(target)) as second:
            second.write("second")
            temporaries = [n for n in os.listdir(tmp_path) if n != "manifest.json"]
            assert len(temporaries) == 2, temporaries
            assert all(n.startswith(".manifest.json.") and n.endswith(".partial") for n in temporaries)
        assert target.read_text() == "second"
    assert target.read_text() == "first"  # the last writer to finish wins, whole
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_missing_parent_directories_are_created_and_json_ends_with_a_newline(tmp_path):
    target = tmp_path / "a" / "b" / "eval.json"
    write_json(str(target), {"value": 1.5}, indent=None, sort_keys=True)
    assert target.read_text() == '{"value": 1.5}\n'


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_output(str(tmp_path / "x"), "a"):
            pass
    assert os.listdir(tmp_path) == []
