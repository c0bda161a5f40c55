"""Runs a user command's main(argv) in this process (no 10-second interpreter start per call), by its tools/ name.

The command modules are the ones tools/<name>.py and setup.py's console scripts run; this never loads files by path.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Iterator

from megatron_sota.runtime.log import PACKAGE_LOGGER

# The three commands that live beside their subsystem; every other tool is megatron_sota/cli/<name>.py.
MODULES = {
    "convert_checkpoint": "megatron_sota.conversion.cli",
    "evaluate": "megatron_sota.evaluation.cli",
    "generate": "megatron_sota.inference.generate_cli",
}


def tool_main(name: str):  # type: ignore[no-untyped-def]
    """main() of tools/<name>.py's command."""
    return importlib.import_module(MODULES.get(name, f"megatron_sota.cli.{name}")).main


@contextlib.contextmanager
def package_logger_kept() -> Iterator[None]:
    """A command's main() points the package logger at the stream it finds (a test's captured stdout):
    afterwards the logger is as it was, so later tests never write to a closed capture."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def run_tool(name: str, argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """(exit code, stdout, stderr) of tools/<name>.py main(argv)."""
    main = tool_main(name)
    capsys.readouterr()
    with package_logger_kept():
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err
