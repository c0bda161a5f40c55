"""Curation runs for the tests: the planted web corpus written as inputs, tools/curate.py run in-process, outputs read back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.curation.corpus import (
    PlantedDoc,
    build_web_corpus,
    write_jsonl_shards,
    write_parquet,
)


@dataclass(frozen=True)
class WebRun:
    docs: list[PlantedDoc]
    inputs: Path
    output: Path
    overrides: list[str]
    """Everything but output_dir and the executor: the SLURM test reuses them."""
    report: dict
    stdout: str


def heuristic_junk(docs: list[PlantedDoc]) -> list[PlantedDoc]:
    """English prose spoiled for exactly one of the Gopher-quality, C4 and FineWeb rules (each passes the others)."""
    text = {d.id: d.text for d in docs}
    words = text["clean-001"].split()
    hashtags = " ".join(f"#{w}" if i % 4 == 0 else w for i, w in enumerate(words))  # symbol/word ratio 0.25
    lorem = text["clean-002"] + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
    words = text["clean-003"].split()
    short_lines = "\n".join(" ".join(words[i : i + 4]) for i in range(0, len(words), 4))  # few lines end a sentence
    return [
        PlantedDoc("junk-hashtags", hashtags, "heuristic_junk", "gopher_quality"),
        PlantedDoc("junk-lorem-ipsum", lorem, "heuristic_junk", "c4"),
        PlantedDoc("junk-short-lines", short_lines, "heuristic_junk", "fineweb"),
    ]


def write_web_inputs(directory: Path) -> list[PlantedDoc]:
    """The planted corpus (plus heuristic_junk) as one .jsonl, one .jsonl.gz and one .parquet file."""
    docs = build_web_corpus(seed=0)
    docs += heuristic_junk(docs)
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl_shards(docs[: 2 * len(docs) // 3], directory, shards=2, gzip_shards=True)
    write_parquet(docs[2 * len(docs) // 3 :], directory / "rest.parquet")
    return docs


def web_overrides(inputs: Path, tokenizer_model: str) -> list[str]:
    return [
        f"input.paths=[{inputs}]", "tasks=2",
        "tokenizer.type=SentencePieceTokenizer", f"tokenizer.model={tokenizer_model}", "tokenize.enabled=true",
    ]


def run_curate(argv: list[str]) -> tuple[int, str]:
    """tools/curate.py main() in this process (no interpreter start); (exit code, what it printed)."""
    import contextlib
    import io

    from tests.logger_state import loggers_kept
    from tests.tool_runner import tool_main

    out = io.StringIO()
    with loggers_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = tool_main("curate")(argv)
    return code, out.getvalue()


def make_web_run(root: Path, tokenizer_model: str) -> WebRun:
    """The web config on the planted corpus, locally, tokenized with tokenizer_model (the `web_run` fixture)."""
    import json

    docs = write_web_inputs(root / "in")
    overrides = web_overrides(root / "in", tokenizer_model)
    code, printed = run_curate(["web", *overrides, f"output_dir={root / 'out'}", "executor.workers=1"])
    assert code == 0, printed[-4000:]
    report = json.loads((root / "out" / "report.json").read_text())
    return WebRun(docs, root / "in", root / "out", overrides, report, printed)


def read_documents(folder: Path) -> list[dict]:
    """Every document of <folder>/<rank>.jsonl.gz, ranks in order."""
    import gzip
    import json

    records = []
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if name.endswith(".jsonl.gz"):
            with gzip.open(folder / name, "rt") as handle:
                records += [json.loads(line) for line in handle]
    return records
