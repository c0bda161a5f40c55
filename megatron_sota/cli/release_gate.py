"""Command line of the release gate: `python tools/release_gate.py gate.yaml --load <run checkpoints> --output-dir DIR`.

Judges the latest (or chosen) iteration against every threshold of the gate file and writes release_gate.{json,md,png}
into DIR (rank 0; under torchrun one rank per TP shard). Exit codes: 0 all checks pass, 1 error, 3 a check failed.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import sys
from typing import List, Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.evaluation.report import BELOW_THRESHOLD_EXIT_CODE  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, command_main  # noqa: E402

log = logging.getLogger("megatron_sota.cli.release_gate")  # not __name__: that is "__main__" under -m

ITER_NAME = re.compile(r"^iter_(\d{7})$")


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a release gate (tasks with thresholds) on a run's checkpoints")
    parser.add_argument("gate", help="gate file: YAML with `tasks:` (task, thresholds, overrides), `description:`, `safety:`")
    parser.add_argument("--load", required=True, help="a run's checkpoint directory (iter_NNNNNNN/ folders) or one iter_NNNNNNN/ directory")
    parser.add_argument("--output-dir", default="release_gate", help="where release_gate.{json,md,png} and the per-iteration results (cache/) go")
    parser.add_argument("--iterations", default="latest", help="latest (the gate's verdict, default), all, or a comma list of iteration numbers; "
                        "the newest of them is judged, every one evaluated so far is plotted")
    parser.add_argument("--limit", type=int, help="score at most this many records per task (quick checks; part of the cache key)")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward pass while scoring")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.micro_batch_size < 1:
        parser.error(f"--micro-batch-size must be >= 1, got {args.micro_batch_size}")
    return args


def select_checkpoints(load: str, iterations: str) -> tuple[str, list[tuple[Optional[int], str]]]:
    """(the run's checkpoint directory, [(iteration, its directory)] oldest first) that --iterations names."""
    from megatron_sota.checkpointing.paths import complete_iterations, iter_dir, latest_complete, resolve_checkpoint_dir

    if complete_iterations(load):
        available = complete_iterations(load)
        if iterations == "latest":
            latest = latest_complete(load)
            return load, [(int(ITER_NAME.match(os.path.basename(latest)).group(1)), latest)]
        if iterations == "all":
            return load, [(step, iter_dir(load, step)) for step in available]
        wanted = _iteration_list(iterations)
        missing = [step for step in wanted if step not in available]
        if missing:
            raise MegatronSotaError(f"--iterations={iterations}: expected saved iterations of {load}, found no iteration {', '.join(map(str, missing))} (saved: {', '.join(map(str, available))})")
        return load, [(step, iter_dir(load, step)) for step in sorted(set(wanted))]
    checkpoint = resolve_checkpoint_dir(load, "--load")
    match = ITER_NAME.match(os.path.basename(os.path.normpath(checkpoint)))
    if iterations != "latest":
        raise MegatronSotaError(f"--iterations={iterations}: --load={load} is one checkpoint, not a run's directory: expected --iterations latest")
    return os.path.dirname(os.path.abspath(checkpoint)), [(int(match.group(1)) if match else None, checkpoint)]


def _iteration_list(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise MegatronSotaError(f"--iterations: expected latest, all or a comma list of iteration numbers, found {text!r}")
    return [int(part) for part in parts]


def run(args: argparse.Namespace) -> int:
    from megatron_sota.cli.evaluate import evaluate_tasks
    from megatron_sota.evaluation.gate_cache import IterationResult, ResultsCache, results_key
    from megatron_sota.evaluation.gate_file import read_gate
    from megatron_sota.evaluation.gate_report import MARKDOWN_NAME, write_gate_reports
    from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
    from megatron_sota.runtime.launch_env import read_launch_env
    from megatron_sota.runtime.session import distributed_session, resolve_device

    gate = read_gate(args.gate)  # every problem of the gate file, before any checkpoint is looked at
    save_dir, selected = select_checkpoints(args.load, args.iterations)
    env = read_launch_env()
    specs = list(gate.specs.values())
    device = resolve_device("auto")
    cache = ResultsCache(os.path.join(args.output_dir, "cache"), results_key(specs, args.limit, args.micro_batch_size, env.world_size, device.type))
    # Every rank decides from the same files before any is written, so all ranks load the same checkpoints.
    results = {iteration: cache.load(iteration, checkpoint) for iteration, checkpoint in selected}
    todo = [(iteration, checkpoint) for iteration, checkpoint in selected if results[iteration] is None]
    for iteration, _ in selected:
        if results[iteration] is not None:
            log.info("iteration %s: results kept from an earlier run (%s)", iteration, cache.directory)
    if todo:
        with distributed_session(inference_parallel(env.world_size), "auto", env=env) as session:
            for iteration, checkpoint in todo:
                log.info("iteration %s: evaluating %s on %d task(s)", iteration, checkpoint, len(specs))
                model = load_inference_model(checkpoint, session.device, "fp32" if session.is_cpu else None)
                rows, seconds = evaluate_tasks(
                    model, specs, micro_batch_size=args.micro_batch_size, limit=args.limit,
                    progress=env.rank == 0 and not args.no_progress,
                )
                del model
                results[iteration] = IterationResult(iteration, os.path.abspath(checkpoint), tuple(rows), seconds, cached=False)
                if env.rank == 0:
                    cache.store(results[iteration])
    judged = results[selected[-1][0]]
    if env.rank != 0:
        from megatron_sota.evaluation.report import check_thresholds

        return BELOW_THRESHOLD_EXIT_CODE if check_thresholds(judged.rows, gate.specs) else 0
    history = {r.iteration: r for r in cache.history(save_dir)}
    history.update(results)  # this run's (a checkpoint without an iteration is not kept)
    meta = {"tensor_parallel": env.world_size, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    checks = write_gate_reports(args.output_dir, gate, judged, sorted(history.values(), key=lambda r: r.iteration or 0), meta)
    with open(os.path.join(args.output_dir, MARKDOWN_NAME), encoding="utf-8") as handle:
        print(handle.read(), end="", flush=True)
    failures = [check.failure for check in checks if not check.passed]
    for failure in failures:
        log.error("%s", failure)
    if failures:
        log.error("release gate %s: %d of %d checks failed on %s", args.gate, len(failures), len(checks), judged.checkpoint)
    return BELOW_THRESHOLD_EXIT_CODE if failures else 0


def main(argv: Optional[List[str]] = None) -> int:
    return command_main(argv, parse_args, run, log)


if __name__ == "__main__":
    sys.exit(main())
