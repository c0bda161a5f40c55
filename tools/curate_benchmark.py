#!/usr/bin/env python
"""Curation speed: documents/s per core of the full web pipeline, beside a read-score-write floor from the same run.

  python -m tools.curate_benchmark                      # ~5000 documents, all cores
  python -m tools.curate_benchmark --docs 20000 --workers 8 --json bench.json

The corpus is the tests' planted web corpus (tests/curation/corpus.py: pydoc prose, near and exact duplicates,
foreign, toxic, PII, junk) built with successive seeds until --docs documents; nothing is downloaded. So it runs
from a checkout's root (`-m` puts it on the import path) with megatron_sota installed, never from a wheel alone.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from collections import Counter

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

# The full pipeline, and the floor: the same reader, token count, quality score and writer with no filter and no dedup.
FLOOR = ["filters.length.enabled=false", "filters.language.enabled=false", "filters.gopher_repetition.enabled=false",
         "filters.gopher_quality.enabled=false", "filters.c4.enabled=false", "filters.fineweb.enabled=false",
         "filters.toxicity.enabled=false", "pii.enabled=false", "dedup.exact=false", "dedup.minhash.enabled=false"]


def parse_args(argv=None) -> argparse.Namespace:
    lines = __doc__.splitlines()
    parser = argparse.ArgumentParser(description=lines[0], epilog="\n".join(lines[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000, help="corpus size in documents (default 5000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cores to use (default: all)")
    parser.add_argument("--work-dir", default=None, help="where corpus and outputs go (default: a temp dir)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def write_corpus(directory: str, docs: int, files: int) -> tuple[int, int]:
    """The planted web corpus over successive seeds, dealt round-robin into JSONL files; (documents, bytes)."""
    try:
        from tests.curation.corpus import build_web_corpus
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("tests"):
            raise
        sys.exit("error: the planted corpus is the checkout's tests/curation/corpus.py: run "
                 "`python -m tools.curate_benchmark` from the checkout's root")

    os.makedirs(directory, exist_ok=True)
    handles = [open(os.path.join(directory, f"part-{i:03d}.jsonl"), "w") for i in range(files)]
    written, seed = 0, 0
    while written < docs:
        for doc in build_web_corpus(seed=seed):
            if written == docs:
                break
            handles[written % files].write(json.dumps({"id": f"s{seed}-{doc.id}", "text": doc.text}) + "\n")
            written += 1
        seed += 1
    for handle in handles:
        handle.close()
    return written, sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "*.jsonl")))


def step_seconds(logs_dir: str) -> Counter:
    """Step name -> seconds summed over all tasks (datatrove's per-step timers), over every stage."""
    seconds: Counter = Counter()
    for path in glob.glob(os.path.join(logs_dir, "*", "stats", "*.json")):
        with open(path) as handle:
            for step in json.load(handle):
                timing = step["time_stats"]
                seconds[step["name"]] += timing if isinstance(timing, (int, float)) else timing.get("total", 0)
    return seconds


def run(source_dir: str, output_dir: str, workers: int, extra: list[str]) -> tuple[dict, float]:
    from megatron_sota.cli.curate import compose
    from megatron_sota.curation.logs import quiet_datatrove
    from megatron_sota.curation.run import curate

    quiet_datatrove()
    cfg, _ = compose("web", [f"input.paths=[{source_dir}]", f"output_dir={output_dir}", f"tasks={workers}",
                             f"executor.workers={workers}", *extra])
    start = time.perf_counter()
    report = curate(cfg, echo=lambda line: None)
    return report, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    root = args.work_dir or tempfile.mkdtemp(prefix="curate_bench_")
    corpus = os.path.join(root, "corpus")
    docs, size = write_corpus(corpus, args.docs, files=max(args.workers, 1) * 2)
    print(f"corpus: {docs} documents, {size / 2**20:.1f} MB in {corpus}; {args.workers} workers")
    results = {}
    for name, extra in (("full web pipeline", []), ("floor: read+score+write", FLOOR)):
        report, wall = run(corpus, os.path.join(root, name.split()[0].strip(":")), args.workers, extra)
        results[name] = {"seconds": round(wall, 2), "docs_per_s": round(docs / wall, 1),
                         "docs_per_s_per_core": round(docs / wall / args.workers, 1),
                         "kept": report["kept"]["documents"], "stage_seconds": report.get("stage_seconds", {})}
    print(f"\n{'run':<26}{'wall s':>8}{'docs/s':>9}{'docs/s/core':>13}{'kept':>7}")
    for name, r in results.items():
        print(f"{name:<26}{r['seconds']:>8.1f}{r['docs_per_s']:>9.1f}{r['docs_per_s_per_core']:>13.1f}{r['kept']:>7}")
    print("\nstages of the full pipeline (wall s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in results["full web pipeline"]["stage_seconds"].items()))
    steps = step_seconds(os.path.join(root, "full", "logs"))
    print("busiest steps (s summed over tasks): "
          + ", ".join(f"{name.split(': ', 1)[-1]} {s:.1f}" for name, s in steps.most_common(8)))
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"documents": docs, "bytes": size, "workers": args.workers, "runs": results,
                       "step_seconds": dict(steps)}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
