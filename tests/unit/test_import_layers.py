"""Imports flow one way: config <- runtime <- model/data/checkpointing <- parallelize <- ... <- training <- entry points.

Read from the source (every import statement, those inside functions too), so a lazy import
that breaks the order is caught as surely as one at the top of a module.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, Tuple

import megatron_sota

PACKAGE_DIR = os.path.dirname(megatron_sota.__file__)

# Lowest first; a module may import its own layer and the layers below it. Subsystems the issue's
# rule does not name sit where their imports put them: conversion, curation and planning use
# models and data; inference runs models read by checkpointing's reader; evaluation scores through
# inference's models; training runs in-loop evaluation; post-training plugs objectives into training;
# perf, the scale rehearsal, serving and the entry points use everything.
LAYERS = (
    ("errors", "atomic_files", "quiet"),
    ("config",),
    ("runtime",),
    ("model", "data", "checkpointing"),
    ("parallelize", "conversion", "curation", "planning"),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("posttrain",),
    ("perf", "rehearsal", "train", "serving"),
)
RANK: Dict[str, int] = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TOP = len(LAYERS)  # a subsystem not placed above is treated as an entry point: nothing placed may import it


def _top_level(relative_path: str) -> str:
    first = relative_path.split(os.sep)[0]
    return first[:-3] if first.endswith(".py") else first


def project_imports(source: str) -> Iterator[Tuple[int, str]]:
    """(line, top-level megatron_sota subsystem) of every absolute import of the project in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "megatron_sota":  # from megatron_sota import training
                modules = [f"megatron_sota.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "megatron_sota" and len(parts) > 1:
                yield node.lineno, parts[1]


def layer_violations(package_dir: str = PACKAGE_DIR) -> list[str]:
    found = []
    for root, _, files in os.walk(package_dir):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, package_dir)
            own = _top_level(relative)
            if own == "__init__":
                continue
            with open(path, encoding="utf-8") as handle:
                source = handle.read()
            for line, target in project_imports(source):
                if target != own and RANK.get(target, TOP) > RANK.get(own, TOP):
                    found.append(f"megatron_sota/{relative}:{line} ({own}) imports megatron_sota.{target}, a higher layer")
    return found


def test_no_module_imports_a_higher_layer():
    violations = layer_violations()
    assert not violations, "\n".join(violations)


def test_the_check_sees_lazy_imports_inside_functions(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "validation.py").write_text(
        "from megatron_sota.errors import MegatronSotaError\n"
        "def check():\n"
        "    from megatron_sota.evaluation.runner import check_task_data\n"
    )
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "state.py").write_text("import megatron_sota.parallelize.ddp\nfrom megatron_sota import config\n")
    assert layer_violations(str(tmp_path)) == [
        "megatron_sota/config/validation.py:3 (config) imports megatron_sota.evaluation, a higher layer"
    ]
