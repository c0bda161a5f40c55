"""The web pipeline with the shared word split (stages.word_splitter) and the array n-gram Gopher repetition rule
keeps, rejects and reports exactly what it does with datatrove's stock per-rule split and stock rule, on the planted
corpus (whose heuristic junk trips each Gopher/C4/FineWeb rule)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datatrove.pipeline.filters import GopherRepetitionFilter

from megatron_sota.curation import stages
from tests.curation.runs import read_documents, run_curate, write_web_inputs

pytestmark = pytest.mark.timeout(300)


def _outputs(output: Path) -> dict:
    """Kept and rejected documents per folder, and the report, with the output folder's path taken out."""
    found = {"documents": read_documents(output / "documents")}
    for folder in sorted((output / "rejected").iterdir()):
        found[f"rejected/{folder.name}"] = read_documents(folder)
    found["report"] = json.loads((output / "report.json").read_text())
    return json.loads(json.dumps(found).replace(str(output), "<out>"))


def _curate(inputs: Path, output: Path) -> dict:
    # Toxicity off: it splits on whitespace only, and loading its model is most of a small run's time.
    code, printed = run_curate(["web", f"input.paths=[{inputs}]", "tasks=1", f"output_dir={output}",
                                "executor.workers=1", "filters.toxicity.enabled=false"])
    assert code == 0, printed[-4000:]
    return _outputs(output)


def test_shared_split_and_rules_keep_reject_and_report_what_the_stock_ones_do(tmp_path, monkeypatch):
    write_web_inputs(tmp_path / "in")
    shared = _curate(tmp_path / "in", tmp_path / "shared")
    with monkeypatch.context() as patch:
        # The stock path: each datatrove rule gets the language code and splits the text itself.
        patch.setattr(stages, "word_splitter", stages._word_language)
        patch.setattr(stages, "FastGopherRepetitionFilter", GopherRepetitionFilter)
        stock = _curate(tmp_path / "in", tmp_path / "stock")
    assert shared.keys() == stock.keys()
    for name in shared:
        assert shared[name] == stock[name], name
    # The comparison covers every rule that splits words: each of them dropped something here.
    reasons = {row["filter"]: row["reasons"] for row in shared["report"]["filters"]}
    assert all(reasons[rule] for rule in ("gopher_repetition", "gopher_quality", "c4", "fineweb")), reasons
    assert shared["report"]["filters"][-1]["filter"] == "minhash" and shared["rejected/minhash"]
