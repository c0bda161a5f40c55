"""One curation run: check the config, resolve the inputs, plan the stages, run them, return the report.

A re-run into the same output directory resumes; one with another config or other inputs is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable

from megatron_sota.atomic_files import write_json
from megatron_sota.curation.config import CurateConfig
from megatron_sota.curation.executors import run_local, submit_slurm, wait_for_slurm
from megatron_sota.curation.layout import RunLayout
from megatron_sota.curation.reader import UNREADABLE_REASON
from megatron_sota.curation.report import format_table
from megatron_sota.curation.stages import implied_threshold, plan_stages
from megatron_sota.data.readers import expand_inputs
from megatron_sota.errors import MegatronSotaError

EXECUTORS = ("local", "slurm")
log = logging.getLogger(__name__)


def validate(cfg: CurateConfig) -> None:
    problems = []
    if cfg.executor.kind not in EXECUTORS:
        problems.append(f"executor.kind: expected one of {', '.join(EXECUTORS)}, found {cfg.executor.kind!r}")
    if cfg.executor.kind == "slurm" and not cfg.executor.partition:
        problems.append("executor.partition: expected the SLURM partition to submit to, found none")
    if not cfg.input.paths:
        problems.append("input.paths: expected at least one file, glob or directory, found none")
    if cfg.tasks < 1:
        problems.append(f"tasks: expected an integer >= 1, found {cfg.tasks}")
    if not 0.0 <= cfg.quality.threshold <= 1.0:
        problems.append(f"quality.threshold: expected a score in [0, 1], found {cfg.quality.threshold}")
    if not 0.0 <= cfg.filters.language.min_score <= 1.0:
        problems.append(f"filters.language.min_score: expected a probability in [0, 1], found {cfg.filters.language.min_score}")
    m = cfg.dedup.minhash
    for key in ("n_grams", "bands", "rows"):
        if getattr(m, key) < 1:
            problems.append(f"dedup.minhash.{key}: expected an integer >= 1, found {getattr(m, key)}")
    if cfg.tokenize.enabled and cfg.tokenizer.type is None:
        problems.append("tokenize.enabled: expected tokenizer.type (and its model file) to tokenize with, found none")
    if problems:
        raise MegatronSotaError("invalid curation config:\n  " + "\n  ".join(problems))


def resolve_inputs(cfg: CurateConfig) -> list[tuple[str, str]]:
    """Every input file as (absolute path, kind), in a fixed order (files are dealt to tasks by position)."""
    return [(os.path.abspath(f.path), f.kind) for f in expand_inputs(list(cfg.input.paths))]


def _run_record(cfg: CurateConfig, files: list[tuple[str, str]]) -> dict:
    # The executor may change between attempts (resume a local run on SLURM); nothing else may.
    settings = dataclasses.asdict(cfg)
    settings.pop("executor")
    return {"config": settings, "inputs": [list(f) for f in files]}


def claim_output_dir(cfg: CurateConfig, layout: RunLayout, files: list[tuple[str, str]]) -> bool:
    """Records the run's config in the output dir; True when resuming the same run, error for another one."""
    record = _run_record(cfg, files)
    if os.path.exists(layout.config_record):
        with open(layout.config_record) as handle:
            previous = json.load(handle)
        if previous != record:
            differing = sorted(k for k in record["config"] if record["config"][k] != previous["config"].get(k))
            if record["inputs"] != previous["inputs"]:
                differing.append("input files")
            raise MegatronSotaError(
                f"{layout.config_record}: this output_dir holds a run with other settings "
                f"({', '.join(differing) or 'format'}); expected the same config to resume, or a new output_dir"
            )
        return True
    write_json(layout.config_record, record, indent=1)
    return False


def load_report(layout: RunLayout) -> dict:
    with open(layout.report("json")) as handle:
        return json.load(handle)


def warn_unreadable(report: dict) -> None:
    """One console warning per input file that could not be read to its end (its reason is in report.json too).

    A file cut short loses all its later documents: unlike a bad line, that must not pass as a count in a table.
    """
    for counts in report["bad_input"]["files_with_problems"].values():
        if UNREADABLE_REASON in counts:
            log.warning(
                "%s; %d documents were read before that point, the rest of the file is missing from this run "
                "(replace the file and run into a new output_dir; --strict stops a run at such a file)",
                counts[UNREADABLE_REASON], counts.get("documents", 0),
            )


def curate(cfg: CurateConfig, echo: Callable[[str], None] = print) -> dict | None:
    """Runs (local) or submits (slurm) the whole curation; returns the report, or None when not waited for.

    A local run's report also holds ``stage_seconds`` (wall seconds per stage of this invocation).
    """
    validate(cfg)
    layout = RunLayout(os.path.abspath(cfg.output_dir))
    files = resolve_inputs(cfg)
    resuming = claim_output_dir(cfg, layout, files)
    stages = plan_stages(cfg, layout, files)
    echo(f"curate {cfg.source}: {len(files)} input files, {cfg.tasks} tasks, {len(stages)} stages "
         f"({', '.join(s.name for s in stages)}) -> {layout.root}" + (" (resuming)" if resuming else ""))
    if cfg.dedup.minhash.enabled:
        m = cfg.dedup.minhash
        echo(f"MinHash: {m.n_grams}-gram shingles, {m.bands} bands x {m.rows} rows: near-duplicates above "
             f"Jaccard ~{implied_threshold(m.bands, m.rows):.3f} are removed")
    stage_seconds: dict[str, float] = {}
    if cfg.executor.kind == "local":
        stage_seconds = run_local(stages, cfg.executor, layout, echo)
    else:
        echo(f"submitting to SLURM partition {cfg.executor.partition}:")
        submit_slurm(stages, cfg.executor, layout, echo)
        if not cfg.executor.wait:
            echo(f"submitted; the report will be {layout.report('json')}")
            return None
        wait_for_slurm(stages, cfg.executor, layout, echo)
    report = load_report(layout)
    echo(format_table(report))
    warn_unreadable(report)
    echo(f"report: {layout.report('json')}, {layout.report('txt')}, {layout.report('png')}")
    return {**report, "stage_seconds": stage_seconds} if stage_seconds else report
