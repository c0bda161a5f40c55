"""Bad input is counted per file (fatal with --strict), bad configs are refused, and an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.curation.bad_input import CUTS, write_bad_input, write_cut_short
from tests.curation.corpus import build_web_corpus, write_jsonl_shards
from tests.curation.runs import read_documents, run_curate

pytestmark = pytest.mark.timeout(600)

# The cheapest run that still reads, filters and writes: no dedup stages, no model-backed filters.
CHEAP = ["tasks=2", "executor.workers=1", "dedup.exact=false", "dedup.minhash.enabled=false",
         "filters.toxicity.enabled=false"]


def test_bad_records_are_counted_per_file_and_reported(tmp_path):
    expected = write_bad_input(tmp_path / "in")
    code, printed = run_curate(["web", f"input.paths=[{tmp_path / 'in'}]", f"output_dir={tmp_path / 'out'}", *CHEAP])
    assert code == 0, printed[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    problems = {Path(p).name: counts for p, counts in report["bad_input"]["files_with_problems"].items()}
    assert set(problems) == set(expected)
    bad = problems["bad.jsonl"]
    assert bad["documents"] == expected["bad.jsonl"]["good"]
    for kind in ("malformed_json", "missing_text", "text_not_string"):
        assert bad[kind] == expected["bad.jsonl"][kind], kind
    assert problems["corrupt.jsonl.gz"]["unreadable"] == 1 and "documents" not in problems["corrupt.jsonl.gz"]
    assert any(":2: expected one JSON object per line" in e for e in bad["examples"])
    assert report["input"]["documents"] == expected["bad.jsonl"]["good"]
    assert "bad.jsonl: malformed_json 2, missing_text 1, text_not_string 1" in printed


def test_strict_stops_at_the_first_bad_record_and_names_it(tmp_path):
    write_bad_input(tmp_path / "in")
    code, printed = run_curate(["web", f"input.paths=[{tmp_path / 'in' / 'bad.jsonl'}]",
                                f"output_dir={tmp_path / 'out'}", "--strict", *CHEAP])
    assert code == 2
    assert "bad.jsonl:2: expected one JSON object per line" in printed and "strict" in printed
    # what the failed task wrote before the bad line stays staged, under no final name
    assert not list((tmp_path / "out" / "documents").glob("*.jsonl.gz"))
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.jsonl.zst"])
def test_a_compressed_file_cut_short_is_reported_unreadable_not_shortened(tmp_path, name, cut):
    path = tmp_path / "in" / name
    first, whole = write_cut_short(path, documents=8, cut=cut)
    argv = ["web", f"input.paths=[{tmp_path / 'in'}]", *CHEAP]
    code, printed = run_curate([*argv, f"output_dir={tmp_path / 'out'}"])
    assert code == 0, printed[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (reported, counts), = report["bad_input"]["files_with_problems"].items()
    assert Path(reported).name == name and counts["unreadable"] == 1, counts
    assert "malformed_json" not in counts, counts  # a half-written last line is the damage, not a bad record
    assert first <= counts["documents"] <= whole  # what came before the cut is kept, and counted
    found = f"{path}: expected a complete, readable file, found a damaged or truncated one (EOFError: "
    if name.endswith(".zst"):
        found += f"truncated zstd frame: the file ends at byte {path.stat().st_size:,}, inside the frame that starts at byte "
    assert counts["unreadable_reason"].startswith(found), counts
    # The console says it in words, not only as a count in the table.
    assert "bad input: none" not in printed and f"{name}: unreadable 1" in printed
    assert (f"warning: {counts['unreadable_reason']}; {counts['documents']} documents were read before that point, "
            f"the rest of the file is missing from this run") in printed, printed[-3000:]

    code, printed = run_curate([*argv, f"output_dir={tmp_path / 'strict'}", "--strict"])
    assert code == 2 and found in printed and "strict" in printed, printed[-2000:]


@pytest.mark.parametrize("override, message", [
    ("executor.kind=cloud", "executor.kind: expected one of local, slurm, found 'cloud'"),
    ("quality.threshold=1.5", "quality.threshold: expected a score in [0, 1], found 1.5"),
    ("tokenize.enabled=true", "tokenize.enabled: expected tokenizer.type"),
    ("filters.lenght.min_chars=5", "unknown config key 'filters.lenght' (did you mean 'length'?)"),
    ("quality.weights.sparkle=1.0", "Could not override 'quality.weights.sparkle'"),
    ("+quality.weights.sparkle=1.0", "unknown weight name(s) ['sparkle']"),
])
def test_bad_config_is_refused_with_the_key_named(tmp_path, override, message):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    code, printed = run_curate(["web", f"input.paths=[{tmp_path / 'in.jsonl'}]", f"output_dir={tmp_path / 'out'}",
                                override])
    assert code == 2 and message in printed, printed[-2000:]


def test_an_interrupted_run_resumes_without_redoing_finished_tasks(tmp_path):
    docs = [d for d in build_web_corpus(seed=0) if d.kind in ("clean", "short", "foreign")]
    files = write_jsonl_shards(docs, tmp_path / "in", shards=2, gzip_shards=True)
    gz = next(f for f in files if f.name.endswith(".gz"))
    intact = gz.read_bytes()
    gz.write_bytes(intact[: len(intact) // 2])  # the second task's file breaks part-way through
    argv = ["web", f"input.paths=[{tmp_path / 'in'}]", f"output_dir={tmp_path / 'out'}", "--strict", *CHEAP]

    code, printed = run_curate(argv)
    assert code == 2 and "expected a complete, readable file, found a damaged or truncated one" in printed, printed[-2000:]
    done = sorted(p.name for p in (tmp_path / "out" / "logs" / "filter" / "completions").iterdir())
    assert done == ["00000"]
    # The failed task's output never appears under its final name; what it wrote stays staged.
    assert not (tmp_path / "out" / "documents" / "00001.jsonl.gz").exists()
    assert list((tmp_path / "out" / "documents" / ".incomplete").glob("00001.jsonl.gz"))
    finished_stats = (tmp_path / "out" / "logs" / "filter" / "stats" / "00000.json").stat().st_mtime_ns

    gz.write_bytes(intact)  # the file is readable again (a storage hiccup is over)
    code, printed = run_curate(argv)
    assert code == 0, printed[-3000:]
    assert "(resuming)" in printed and "filter: 1 of 2 tasks" in printed
    assert (tmp_path / "out" / "logs" / "filter" / "stats" / "00000.json").stat().st_mtime_ns == finished_stats

    fresh = tmp_path / "fresh"
    code, printed = run_curate([*argv[:2], f"output_dir={fresh}", *argv[3:]])
    assert code == 0, printed[-3000:]
    assert read_documents(tmp_path / "out" / "documents") == read_documents(fresh / "documents")
    resumed, uninterrupted = (json.loads((d / "report.json").read_text()) for d in (tmp_path / "out", fresh))
    for report in (resumed, uninterrupted):
        for row in report["filters"]:
            row.pop("rejected_dir")
    assert resumed["filters"] == uninterrupted["filters"] and resumed["input"] == uninterrupted["input"]


def test_a_different_config_in_the_same_output_dir_is_refused(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "word " * 100}) + "\n")
    base = ["web", f"input.paths=[{tmp_path / 'in.jsonl'}]", f"output_dir={tmp_path / 'out'}", *CHEAP]
    assert run_curate(base)[0] == 0
    code, printed = run_curate([*base, "filters.length.min_words=60"])
    assert code == 2 and "other settings (filters)" in printed
