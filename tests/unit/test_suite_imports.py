"""Test modules share helpers only through helper modules of tests/ (tool_runner.py, distributed/jobs.py, ...),
by public names: never from another test_*.py module or conftest.py, never an underscore name."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _package(path: Path) -> str:
    """The package relative imports in ``path`` start from: tests/unit/x.py -> tests.unit."""
    return ".".join(path.relative_to(TESTS.parent).parent.parts)


def _is_test_module(dotted: str) -> bool:
    last = dotted.rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def forbidden_imports(source: str, package: str) -> list[str]:
    """'line N: what' for each import in ``source`` (a module of ``package``) that reaches into a test module or
    takes a private name from a module of tests/."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [(base, alias.name) for alias in node.names]
        else:
            continue
        for source_module, name in targets:
            if source_module.split(".")[0] != "tests":
                continue
            if _is_test_module(source_module) or (name and _is_test_module(name)):
                found.append(f"line {node.lineno}: {source_module} {name or ''} is a test module")
            elif name and name.startswith("_"):
                found.append(f"line {node.lineno}: {name} from {source_module} is private")
    return found


def test_no_test_module_imports_another_test_module_or_a_private_helper():
    problems = [
        f"{path.relative_to(TESTS.parent)} {problem}"
        for path in sorted(TESTS.rglob("*.py"))
        for problem in forbidden_imports(path.read_text(), _package(path))
    ]
    assert not problems, "move shared helpers into a helper module with public names:\n" + "\n".join(problems)


def test_the_check_sees_absolute_relative_and_private_imports():
    package = "tests.integration"
    assert forbidden_imports("from tests.integration.test_train_cli import run\n", package)
    assert forbidden_imports("from .test_train_cli import run\n", package)
    assert forbidden_imports("from . import test_train_cli\n", package)
    assert forbidden_imports("import tests.unit.test_data_mix\n", package)
    assert forbidden_imports("from ..distributed.jobs import _job\n", package)
    assert forbidden_imports("def f():\n    from tests.conftest import StdlibShards\n", package)
    assert not forbidden_imports("from tests.distributed.jobs import stdlib_job\nfrom os import _exit\n", package)
