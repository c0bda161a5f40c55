"""One mechanism, one place: the package replaces files, finds free ports and knows GPU peaks in one module each.

Read from the source (AST), so a second copy written later fails here rather than drifting apart in silence.
"""

from __future__ import annotations

import ast
import pathlib

import megatron_sota

PACKAGE = pathlib.Path(megatron_sota.__file__).parent
# Renames that are not "replace one file": whole directories put in place, and a .bin/.idx pair
# that megatron-core's builder writes by path and that must be renamed in a fixed order.
RENAMES_ALLOWED = {
    "atomic_files.py",
    "checkpointing/manager.py",
    "conversion/staged_output.py",
    "data/merge.py",
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def test_files_are_replaced_only_through_atomic_files():
    renames = sorted(
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("replace", "rename")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "os"
        and name not in RENAMES_ALLOWED
    )
    assert renames == [], f"write through megatron_sota.atomic_files instead: {renames}"


def test_a_free_port_is_found_in_one_place():
    binders = sorted(
        name
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "bind"
        and node.args
        and isinstance(node.args[0], ast.Tuple)
        and isinstance(node.args[0].elts[-1], ast.Constant)
        and node.args[0].elts[-1].value == 0
    )
    assert binders == ["runtime/launch_env.py"]


def test_gpu_peak_figures_live_in_one_table():
    # The dense bf16 peaks of the H100/H200 (989.4) and A100 (312.0) TFLOP/s as numbers in code.
    holders = sorted(
        {
            name
            for name, tree in _modules()
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value in (989.4, 312.0)
        }
    )
    assert holders == ["runtime/gpus.py"]
