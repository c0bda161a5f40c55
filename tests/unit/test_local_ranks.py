"""run_distributed's ranks: forked from a server that has imported megatron-core once, yet each sees its
caller's environment and working directory as a freshly spawned process would; a rank's failure is reported whole."""

from __future__ import annotations

import os
import sys

import pytest

from megatron_sota.runtime.local_ranks import RankFailure, run_distributed
from tests.rank_preload import RANK_PRELOAD

VARIABLE = "MEGATRON_SOTA_TEST_LOCAL_RANKS"


def _what_the_rank_sees(rank: int) -> dict:
    return {
        "variable": os.environ.get(VARIABLE),
        "cwd": os.getcwd(),
        "world": os.environ["WORLD_SIZE"],
        "megatron_core_imported_at_start": "megatron.core" in sys.modules,
    }


def test_ranks_see_the_callers_current_environment_and_directory(tmp_path, monkeypatch):
    run_distributed(_what_the_rank_sees, 1)  # the forkserver now runs, with the environment of this moment
    monkeypatch.setenv(VARIABLE, "set after the first call")
    monkeypatch.chdir(tmp_path)
    seen = run_distributed(_what_the_rank_sees, 2)
    assert [s["variable"] for s in seen] == ["set after the first call"] * 2
    assert [s["cwd"] for s in seen] == [str(tmp_path)] * 2 and [s["world"] for s in seen] == ["2", "2"]
    monkeypatch.delenv(VARIABLE)
    assert run_distributed(_what_the_rank_sees, 1)[0]["variable"] is None


def test_ranks_start_with_megatron_core_already_imported():
    # What a rank saves: importing megatron-core takes ~3 s per spawned rank (and neither this module nor
    # local_ranks.py imports it, so a spawned rank would start without it).
    assert all(s["megatron_core_imported_at_start"] for s in run_distributed(_what_the_rank_sees, 2))


def _not_imported_at_start(rank: int, names) -> list:
    return [name for name in names if name not in sys.modules]


def test_ranks_start_with_the_suites_probe_modules_imported():
    # tests/conftest.py adds them to the forkserver's preload, which skips a name that does not import (a renamed
    # module): this names it. Neither this module nor local_ranks.py imports them, so a rank would start without.
    assert run_distributed(_not_imported_at_start, 1, RANK_PRELOAD) == [[]]


def _exit_after_a_traceback(rank: int) -> None:
    raise SystemExit(5)  # a BaseException: the rank writes its traceback, then its process ends with code 5


def test_a_rank_that_ends_with_an_exit_code_reports_its_traceback_and_how_it_ended():
    with pytest.raises(RankFailure) as failure:
        run_distributed(_exit_after_a_traceback, 1)
    assert "SystemExit: 5" in str(failure.value) and "terminated with exit code 5" in str(failure.value)
