"""Our tokenizers stand on a base class of our own: nothing of ours needs megatron-core's legacy tokenizer module.

megatron-core 0.19 no longer has megatron.core.datasets.megatron_tokenizer (MegatronLegacyTokenizer).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]
LEGACY_MODULE = "megatron.core.datasets.megatron_tokenizer"
LEGACY_CLASS = "MegatronLegacyTokenizer"


def _legacy_imports(source: str, name: str) -> list[str]:
    """`name:line` of every import of the legacy module or class in one source text."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            modules += [alias.name for alias in node.names]
        else:
            continue
        if any(m == LEGACY_MODULE or m.startswith(LEGACY_MODULE + ".") or m == LEGACY_CLASS for m in modules):
            found.append(f"{name}:{node.lineno}")
    return found


def test_no_module_of_ours_imports_the_legacy_tokenizer():
    sources = [*(REPO / "megatron_sota").rglob("*.py"), *(REPO / "tools").glob("*.py")]
    assert len(sources) > 50
    offenders = [
        hit for path in sources for hit in _legacy_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert offenders == [], f"{LEGACY_MODULE} is gone in megatron-core 0.19; imported at {offenders}"


def test_the_import_scan_finds_each_spelling():
    """The scan above would pass trivially if it missed a spelling."""
    spellings = [
        f"from {LEGACY_MODULE} import {LEGACY_CLASS}",
        f"import {LEGACY_MODULE}",
        f"import {LEGACY_MODULE} as legacy",
        "from megatron.core.datasets import megatron_tokenizer",
        f"def f():\n    from {LEGACY_MODULE} import {LEGACY_CLASS} as Base",
    ]
    for line in spellings:
        assert _legacy_imports(line, "probe.py"), line
    assert _legacy_imports("from megatron.core.tokenizers import MegatronTokenizer", "probe.py") == []


# The legacy module is made unimportable, as it is in megatron-core 0.19, before anything of ours loads.
WITHOUT_LEGACY_MODULE = textwrap.dedent(
    f"""
    import sys
    sys.modules[{LEGACY_MODULE!r}] = None

    import megatron_sota.conversion.tokenizer_export
    import megatron_sota.data.byte_level_bpe_training
    import megatron_sota.data.preprocess
    from megatron_sota.config.run import DataConfig
    from megatron_sota.data.blend import SampleCounts, build_datasets
    from megatron_sota.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer("NullTokenizer", vocab_size=97)
    assert not any(cls.__module__.startswith("megatron.core") for cls in type(tokenizer).__mro__)
    train, _, _ = build_datasets(DataConfig(mock=True), tokenizer, 16, 1, SampleCounts(8, 0, 0), sys.argv[1])
    tokens = train[0]["tokens"]
    assert len(train) >= 8 and tokens.shape == (16,) and int(tokens.max()) < 97
    print("datasets built without", {LEGACY_MODULE!r})
    """
)


def test_tokenizers_and_gpt_datasets_work_without_the_legacy_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LEGACY_MODULE, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "datasets built without" in result.stdout
