"""The final report of a curation run: per-filter kept/dropped documents and tokens, PII counts, bad input.

Read from the stages' datatrove stats and the reader's per-file audit; written as report.json, report.txt and
report.png, the last step of the run. It must not recount documents on disk: the tallies are the measurement.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from dataclasses import dataclass, field

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_sota.atomic_files import atomic_output, write_json, write_text
from megatron_sota.curation.layout import RunLayout
from megatron_sota.curation.reader import PROBLEM_KINDS
from megatron_sota.curation.tally import TALLY_PREFIX, TOKENS_KEY

PII_STAT_PREFIX = "pii_"


@dataclass
class ReportPlan:
    """What the report needs to know about the run's plan (stage names, tallies in pipeline order)."""

    source: str
    stages: list[str]
    tallies: list[str]
    token_unit: str
    quality_threshold: float
    minhash: dict | None = None
    tokenized_prefix: str | None = None
    filter_steps: dict[str, str] = field(default_factory=dict)
    """Tally label -> the datatrove step name whose stats hold its drop reasons."""


def _total(value) -> float:
    return value if isinstance(value, (int, float)) else value.get("total", 0)


def merged_stats(logging_dir: str) -> dict[str, Counter]:
    """Step name -> summed stats over every task of one stage (its ``stats/<rank>.json`` files)."""
    merged: dict[str, Counter] = {}
    for path in sorted(glob.glob(os.path.join(logging_dir, "stats", "*.json"))):
        with open(path) as handle:
            for step in json.load(handle):
                bucket = merged.setdefault(step["name"], Counter())
                for key, value in step["stats"].items():
                    bucket[key] += _total(value)
    return merged


def _find(stats: dict[str, Counter], step_name: str) -> Counter:
    for name, values in stats.items():
        if name == step_name or name.endswith(f": {step_name}"):
            return values
    return Counter()


def _bad_input(layout: RunLayout) -> dict:
    files: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(layout.bad_input, "*.json"))):
        with open(path) as handle:
            files.update(json.load(handle))
    totals = Counter()
    for counts in files.values():
        for kind in PROBLEM_KINDS:
            totals[kind] += counts.get(kind, 0)
    problems = {path: counts for path, counts in files.items() if any(counts.get(k) for k in PROBLEM_KINDS)}
    return {"files_read": len(files), "totals": {k: totals[k] for k in PROBLEM_KINDS}, "files_with_problems": problems}


def build_report(layout: RunLayout, plan: ReportPlan) -> dict:
    stats: dict[str, Counter] = {}
    for stage in plan.stages:
        stats.update(merged_stats(layout.logs(stage)))
    flow = []
    for label in plan.tallies:
        counts = _find(stats, f"{TALLY_PREFIX}{label}")
        flow.append((label, int(counts["documents"]), int(counts[TOKENS_KEY])))
    (_, input_docs, input_tokens), rows = flow[0], []
    for (_, docs_before, tokens_before), (label, docs, tokens) in zip(flow, flow[1:]):
        reasons = _find(stats, plan.filter_steps.get(label, "")) if label in plan.filter_steps else Counter()
        rows.append({
            "filter": label,
            "dropped_documents": docs_before - docs,
            "dropped_tokens": tokens_before - tokens,
            "kept_documents": docs,
            "kept_tokens": tokens,
            "reasons": {k.removeprefix("dropped_"): int(v) for k, v in sorted(reasons.items())
                        if k.startswith("dropped_")},
            "rejected_dir": layout.rejected(label),
        })
    kept_docs, kept_tokens = flow[-1][1], flow[-1][2]
    pii = _find(stats, "pii")
    merge = _find(stats, "merge shards")
    return {
        "source": plan.source,
        "token_unit": plan.token_unit,
        "input": {"documents": input_docs, "tokens": input_tokens},
        "filters": rows,
        "kept": {"documents": kept_docs, "tokens": kept_tokens, "dir": layout.documents},
        "high_quality": {
            "documents": int(_find(stats, "high-quality copy")["high_quality"]),
            "threshold": plan.quality_threshold,
            "dir": layout.high_quality,
        },
        "pii_redactions": {k.removeprefix(PII_STAT_PREFIX): int(v) for k, v in sorted(pii.items())
                           if k.startswith(PII_STAT_PREFIX)},
        "minhash": plan.minhash,
        "bad_input": _bad_input(layout),
        "tokenized": (
            {"prefix": f"{plan.tokenized_prefix}_text_document", "documents": int(merge["documents"]),
             "tokens": int(merge["tokens"])} if plan.tokenized_prefix else None
        ),
    }


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def format_table(report: dict) -> str:
    unit = report["token_unit"]
    docs, tokens = report["input"]["documents"], report["input"]["tokens"]
    lines = [
        f"curation report: source {report['source']} (tokens = {unit}, counted as read)",
        f"{'stage':<20}{'docs dropped':>14}{'':>8}{'tokens dropped':>16}{'docs left':>12}{'tokens left':>14}",
        f"{'input':<20}{'':>14}{'':>8}{'':>16}{docs:>12,}{tokens:>14,}",
    ]
    for row in report["filters"]:
        lines.append(
            f"{row['filter']:<20}{row['dropped_documents']:>14,}{_percent(row['dropped_documents'], docs):>8}"
            f"{row['dropped_tokens']:>16,}{row['kept_documents']:>12,}{row['kept_tokens']:>14,}"
        )
    kept = report["kept"]
    hq = report["high_quality"]
    lines.append(f"{'kept':<20}{'':>14}{'':>8}{'':>16}{kept['documents']:>12,}{kept['tokens']:>14,}")
    lines.append(f"high quality (score >= {hq['threshold']}): {hq['documents']:,} documents")
    if report["pii_redactions"]:
        lines.append("PII redacted: " + ", ".join(f"{k} {v:,}" for k, v in report["pii_redactions"].items()))
    if report["minhash"]:
        m = report["minhash"]
        lines.append(f"MinHash: {m['n_grams']}-grams, {m['bands']} bands x {m['rows']} rows, "
                     f"implied Jaccard threshold {m['implied_threshold']:.3f}")
    bad = report["bad_input"]
    problems = {k: v for k, v in bad["totals"].items() if v}
    lines.append(f"input files read: {bad['files_read']}; bad input: "
                 + (", ".join(f"{k} {v}" for k, v in problems.items()) if problems else "none"))
    for path, counts in bad["files_with_problems"].items():
        detail = ", ".join(f"{k} {counts[k]}" for k in PROBLEM_KINDS if counts.get(k))
        lines.append(f"  {path}: {detail}")
    if report["tokenized"]:
        t = report["tokenized"]
        lines.append(f"tokenized: {t['prefix']}.bin/.idx ({t['documents']:,} documents, {t['tokens']:,} tokens)")
    return "\n".join(lines)


def draw_chart(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["filter"] for row in report["filters"]] + ["kept"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.5))
    for axis, what, unit in ((axes[0], "documents", "documents"), (axes[1], "tokens", report["token_unit"])):
        values = [row[f"dropped_{what}"] for row in report["filters"]] + [report["kept"][what]]
        colors = ["tab:red"] * (len(labels) - 1) + ["tab:green"]
        axis.barh(labels[::-1], values[::-1], color=colors[::-1])
        axis.set_xlabel(f"{unit} dropped (red) / kept (green)")
    fig.suptitle(f"curation of {report['source']}: {report['input']['documents']:,} documents in")
    fig.tight_layout()
    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


class BuildReport(PipelineStep):
    """The run's last stage (one task): report.json, report.txt and report.png in the output directory."""

    type = "📊 - REPORT"
    name = "report"

    def __init__(self, layout: RunLayout, plan: ReportPlan) -> None:
        super().__init__()
        self.layout = layout
        self.plan = plan

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        report = build_report(self.layout, self.plan)
        draw_chart(report, self.layout.report("png"))
        write_text(self.layout.report("txt"), format_table(report) + "\n")
        write_json(self.layout.report("json"), report, indent=1)  # last: its presence = done
