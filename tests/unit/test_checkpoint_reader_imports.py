"""The offline reader of our checkpoints lives in checkpointing/: inference and checkpointing never import conversion.

Read from the source (AST, lazy imports inside functions included), so no import runs here.
"""

from __future__ import annotations

import ast
import pathlib

import megatron_sota

PACKAGE = pathlib.Path(megatron_sota.__file__).parent


def _imported_modules(subpackage: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / subpackage).rglob("*.py")):
        names = found.setdefault(path.relative_to(PACKAGE).as_posix(), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return found


def _importers_of(subpackage: str, target: str) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in _imported_modules(subpackage).items()
        for name in sorted(names)
        if name == target or name.startswith(target + ".")
    ]


def test_inference_reads_checkpoints_without_conversion():
    assert _importers_of("inference", "megatron_sota.conversion") == []


def test_checkpointing_imports_neither_conversion_nor_inference():
    assert _importers_of("checkpointing", "megatron_sota.conversion") == []
    assert _importers_of("checkpointing", "megatron_sota.inference") == []


def test_the_offline_reader_is_in_checkpointing():
    from megatron_sota.checkpointing.dist_reader import DistCheckpointReader

    assert DistCheckpointReader.__module__ == "megatron_sota.checkpointing.dist_reader"
    assert not (PACKAGE / "conversion" / "dist_reader.py").exists()
