"""Command line of evaluation: `python tools/evaluate.py --load <checkpoint> --task <name|path> --output report.json`.

Runs on one process (TP=1) or under torchrun with one rank per TP shard. Rank 0 prints the table (its
product, on stdout; messages go to stderr) and writes the report, and beside it a heat map per passkey task
(<report>.<task>.png). Exit codes: 0 all thresholds met, 1 error, 3 a task breached a threshold (below a minimum or above a maximum).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from typing import Dict, List, Optional, Tuple

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.evaluation.report import BELOW_THRESHOLD_EXIT_CODE  # noqa: E402
from megatron_sota.evaluation.task_spec import NO_FEWSHOT_TYPES, TASK_TYPES, load_task, registered_tasks, with_chat  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, command_main  # noqa: E402

log = logging.getLogger("megatron_sota.cli.evaluate")  # not __name__: that is "__main__" under -m


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a megatron_sota checkpoint on local tasks",
        epilog=f"registered tasks (megatron_sota/conf/eval/tasks/): {', '.join(registered_tasks()) or 'none'}",
    )
    parser.add_argument("--load", required=True, help="checkpoint directory (latest iteration) or iter_NNNNNNN/ directory")
    parser.add_argument("--task", action="append", required=True, help="a name from megatron_sota/conf/eval/tasks/, a .jsonl file, or a .bin/.idx prefix (repeatable)")
    parser.add_argument("--task-type", choices=TASK_TYPES, help="the type of a task given as a path (overrides the registry's)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt (overrides the registry's; ignored by perplexity, passkey, refusal and code tasks)")
    parser.add_argument("--limit", type=int, help="score at most this many records per task")
    parser.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward pass while scoring")
    parser.add_argument("--chat", action="store_true", help="chat-format every generated-answer task (as a task's `chat: true` does) "
                        "with the checkpoint's post-training template, else the shipped ChatML one")
    parser.add_argument("--chat-template", help="the chat template of chat-formatted tasks: a .jinja file or a tokenizer directory")
    parser.add_argument("--output", help="JSON report (and <report>.<task>.png per passkey task); also printed as a table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        parser.error(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.micro_batch_size < 1:
        parser.error(f"--micro-batch-size must be >= 1, got {args.micro_batch_size}")
    return args


def _progress_bar(enabled: bool, name: str):
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="req", file=sys.stderr, leave=False)
    return bar, bar.update


def _load(name: str, args: argparse.Namespace):
    spec = load_task(name, args.task_type)
    if args.num_fewshot is not None and spec.type not in NO_FEWSHOT_TYPES:
        spec = load_task(name, args.task_type, args.num_fewshot)
    return with_chat(spec) if args.chat else spec


def load_tasks(names: List[str], args: argparse.Namespace) -> list:
    """The specs of `names`, each task's data read and its prompts built once: a malformed task fails before a model loads."""
    from megatron_sota.evaluation.runner import check_task_data

    specs = [_load(name, args) for name in names]
    for spec in specs:
        check_task_data(spec)
    return specs


def evaluate_tasks(
    model, specs: list, *, micro_batch_size: int, limit: Optional[int], progress: bool, chat_template: Optional[str] = None,
) -> Tuple[list, Dict[str, float]]:
    """(metric rows, seconds per task) of `specs` on an InferenceModel, with progress bars when `progress` (rank 0);
    `chat_template`: the template of chat-formatted tasks (default: the checkpoint's, else the shipped one)."""
    from megatron_sota.data.tokenizer import build_configured_tokenizer
    from megatron_sota.evaluation.eval_models import from_inference_model
    from megatron_sota.evaluation.passkey import check_lengths_fit
    from megatron_sota.evaluation.runner import evaluate
    from megatron_sota.evaluation.runner import ChatFormat
    from megatron_sota.serving.chat import served_template

    for spec in specs:  # every passkey length checked before the first task runs
        if spec.type == "passkey":
            check_lengths_fit(spec, model.job.model.max_position_embeddings)
    tokenizer = build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
    chat = None
    if any(spec.chat for spec in specs):
        served = served_template(model.job, tokenizer, chat_template)
        chat = ChatFormat(served.prompt, tuple(served.stop))
    eval_model = from_inference_model(model, tokenizer, micro_batch_size, chat)
    rows, seconds = [], {}
    for spec in specs:
        start = time.perf_counter()
        bar, update = _progress_bar(progress, spec.name)
        try:
            rows.extend(evaluate(spec, eval_model, limit, update))
        finally:
            if bar is not None:
                bar.close()
        seconds[spec.name] = round(time.perf_counter() - start, 3)
    return rows, seconds


def run(args: argparse.Namespace) -> int:
    from megatron_sota.evaluation.report import check_thresholds, write_report
    from megatron_sota.inference.checkpoint_model import load_inference_model
    from megatron_sota.inference.text_model import inference_session

    specs = load_tasks(args.task, args)
    with inference_session() as (env, session):
        model = load_inference_model(args.load, session.device, "fp32" if session.is_cpu else None)
        rows, seconds = evaluate_tasks(
            model, specs, micro_batch_size=args.micro_batch_size, limit=args.limit,
            progress=env.rank == 0 and not args.no_progress, chat_template=args.chat_template,
        )
    failures = check_thresholds(rows, {spec.name: spec for spec in specs})
    if env.rank != 0:
        return BELOW_THRESHOLD_EXIT_CODE if failures else 0
    tasks = {s.name: {"type": s.type, "path": s.path, "num_fewshot": s.num_fewshot, "seconds": seconds[s.name]} for s in specs}
    print(_tables(rows, specs, tasks, args.output), flush=True)
    if args.output:
        meta = {
            "checkpoint": args.load,
            "tensor_parallel": env.world_size,
            "tasks": tasks,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_report(args.output, rows, failures, meta)
    for failure in failures:
        log.error("%s", failure)
    return BELOW_THRESHOLD_EXIT_CODE if failures else 0


def _tables(rows: list, specs: list, tasks: dict, output: Optional[str]) -> str:
    """The results table (a passkey task's cells left to its grid), then each passkey grid; heat maps beside `output`.

    Adds each passkey task's grid (and heat map path) to its entry in `tasks`, for the JSON report.
    """
    import os

    from megatron_sota.evaluation.passkey_report import format_grid, is_cell_metric, passkey_grid, write_heatmap
    from megatron_sota.evaluation.report import format_table

    parts = [format_table([row for row in rows if not is_cell_metric(row.metric)])]
    for spec in (s for s in specs if s.type == "passkey"):
        grid = passkey_grid(spec, rows)
        parts.append(format_grid(grid))
        tasks[spec.name]["grid"] = grid.as_json()
        if output:
            tasks[spec.name]["heatmap"] = path = f"{os.path.splitext(output)[0]}.{spec.name}.png"
            write_heatmap(path, grid)
    return "\n\n".join(parts)


def main(argv: Optional[List[str]] = None) -> int:
    return command_main(argv, parse_args, run, log)


if __name__ == "__main__":
    sys.exit(main())
