"""The console set-up of runtime/log.py: rank prefix, rank-0 filter, level, streams, idempotence."""

from __future__ import annotations

import logging

import pytest

from megatron_sota.config.job import JobConfig
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import PACKAGE_LOGGER, ConsoleHandler, setup_logging
from tests.logger_state import loggers_kept

ours = logging.getLogger("megatron_sota.some_module")
megatron = logging.getLogger("megatron.core.some_module")


@pytest.fixture(autouse=True)
def restore_loggers(monkeypatch):
    """setup_logging changes process-wide loggers; put them back for the other tests."""
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    with loggers_kept():
        yield


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def test_one_process_prints_information_plainly_and_warnings_to_stderr(capsys):
    setup_logging()
    ours.info("step 1 | loss 9.0")
    ours.warning("loss spike at step 3")
    ours.error("diverged")
    out, err = capsys.readouterr()
    assert out == "step 1 | loss 9.0\n"
    assert err == "warning: loss spike at step 3\nerror: diverged\n"


def test_rank_1_prints_only_its_warnings_and_errors_with_its_rank(monkeypatch, capsys):
    _as_rank(monkeypatch, 1, 2)
    setup_logging()
    ours.info("step 1 | loss 9.0")
    ours.warning("checkpoint slow")
    ours.error("cannot read shard")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "[rank 1] warning: checkpoint slow\n[rank 1] error: cannot read shard\n"


def test_rank_0_information_needs_no_prefix_but_its_warnings_name_it(monkeypatch, capsys):
    _as_rank(monkeypatch, 0, 2)
    setup_logging()
    ours.info("step 1 | loss 9.0")
    ours.warning("checkpoint slow")
    out, err = capsys.readouterr()
    assert out == "step 1 | loss 9.0\n"
    assert err == "[rank 0] warning: checkpoint slow\n"


def test_all_ranks_lets_every_rank_print_with_its_prefix(monkeypatch, capsys):
    _as_rank(monkeypatch, 3, 4)
    setup_logging(all_ranks=True)
    ours.info("waiting at the barrier")
    assert capsys.readouterr().out == "[rank 3] waiting at the barrier\n"


def test_slurm_variables_name_the_rank_outside_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    setup_logging()
    ours.info("not shown on rank 2")
    ours.warning("shown")
    out, err = capsys.readouterr()
    assert out == "" and err == "[rank 2] warning: shown\n"


def test_level_warning_hides_information_and_debug_shows_debug_lines(capsys):
    setup_logging("WARNING")
    ours.info("hidden")
    ours.warning("shown")
    assert capsys.readouterr() == ("", "warning: shown\n")
    setup_logging("DEBUG")
    ours.debug("bucket sizes")
    assert capsys.readouterr().out == "debug [megatron_sota.some_module]: bucket sizes\n"


def test_megatron_core_information_only_at_debug_its_warnings_always(capsys):
    setup_logging("INFO")
    megatron.info("> total number of samples: 532736")
    megatron.warning("a new megatron-core warning")
    assert capsys.readouterr() == ("", "warning [megatron.core.some_module]: a new megatron-core warning\n")
    setup_logging("DEBUG")
    megatron.info("> total number of samples: 532736")
    assert capsys.readouterr().out == "info [megatron.core.some_module]: > total number of samples: 532736\n"


def test_commands_whose_stdout_is_their_product_send_information_to_stderr(capsys):
    setup_logging(info_stream="stderr")
    ours.info("loading the checkpoint")
    assert capsys.readouterr() == ("", "loading the checkpoint\n")


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_setting_up_twice_prints_each_line_once_and_does_not_reach_the_root_logger(capsys):
    setup_logging()
    setup_logging()
    root, recorder = logging.getLogger(), _Recorder()
    root.addHandler(recorder)  # where Hydra's handlers sit: they would print each line a second time
    try:
        ours.info("once")
        megatron.warning("once too")
    finally:
        root.removeHandler(recorder)
    assert capsys.readouterr() == ("once\n", "warning [megatron.core.some_module]: once too\n")
    assert recorder.records == []
    assert len([h for h in logging.getLogger(PACKAGE_LOGGER).handlers if isinstance(h, ConsoleHandler)]) == 1


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="expected one of DEBUG, INFO, WARNING, ERROR, found 'LOUD'"):
        setup_logging("LOUD")


def test_logging_level_is_checked_with_the_other_config_values():
    job = JobConfig()
    job.data.mock = True
    validate_job(job, 1)  # the default, INFO
    job.logging.level = "LOUD"
    job.train.recompute = "sometimes"
    with pytest.raises(MegatronSotaError) as info:
        validate_job(job, 1)
    assert "logging.level must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'" in str(info.value)
    assert "train.recompute must be one of" in str(info.value)  # reported together


# The modules a user runs; only they may print, and only a command's product to stdout.
ENTRY_POINTS = (
    "cli/", "train.py", "conversion/cli.py", "inference/generate_cli.py", "serving/cli.py",
    "serving/gateway/cli.py",
)


def _print_calls(package_dir: str):
    import ast
    import os

    for root, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as handle:
                    tree = ast.parse(handle.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                        yield os.path.relpath(path, package_dir).replace(os.sep, "/"), node


def test_messages_go_through_logging_and_only_entry_points_print_their_product():
    import os

    import megatron_sota

    calls = list(_print_calls(os.path.dirname(megatron_sota.__file__)))
    assert calls, "the scan found no print at all: it no longer sees the package's commands"
    misplaced = [
        f"{path}:{node.lineno}"
        for path, node in calls
        if not path.startswith(ENTRY_POINTS) or any(keyword.arg == "file" for keyword in node.keywords)
    ]
    assert misplaced == [], "print outside a command's product (use logging.getLogger(__name__)): " + ", ".join(misplaced)
