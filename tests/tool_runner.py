"""Runs a tools/*.py command line in this process (no 10-second interpreter start per call)."""

from __future__ import annotations

import importlib.util
import pathlib

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def run_tool(name: str, argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """(exit code, stdout, stderr) of tools/<name>.py main(argv)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    code = module.main(argv)
    out, err = capsys.readouterr()
    return code, out, err
