"""Runs a user command's main(argv) in this process (no 10-second interpreter start per call), by its tools/ name.

The command modules are the ones tools/<name>.py and setup.py's console scripts run; this never loads files by path.
"""

from __future__ import annotations

import importlib

from tests.logger_state import loggers_kept

# The two commands that live beside their subsystem; every other tool is megatron_sota/cli/<name>.py.
MODULES = {
    "convert_checkpoint": "megatron_sota.conversion.cli",
    "generate": "megatron_sota.inference.generate_cli",
}


def tool_main(name: str):  # type: ignore[no-untyped-def]
    """main() of tools/<name>.py's command."""
    return importlib.import_module(MODULES.get(name, f"megatron_sota.cli.{name}")).main


def run_tool(name: str, argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """(exit code, stdout, stderr) of tools/<name>.py main(argv)."""
    main = tool_main(name)
    capsys.readouterr()
    with loggers_kept():  # main() points the loggers at this test's captured streams
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err
