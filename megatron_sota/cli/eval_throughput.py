"""CLI: requests/s of lm-eval on our checkpoint (model "megatron_sota") against lm-eval's `hf` model on its export.

  python tools/eval_throughput.py --load <checkpoint> --hf <export> --tasks megatron_sota_mc_sample \
      --include-path examples/lm_eval [--batch-size 8] [--limit N] [--report throughput.json]

Both run the same tasks through lm_eval.simple_evaluate in this process, one after the other, at the same batch size
and precision. A model's load is timed apart from its evaluation; requests/s is the requests lm-eval sent it divided
by the evaluation's wall time (lm-eval's own work included, the same for both), and by the seconds inside the model.
One process (TP=1): the hf model has no tensor parallelism to compare against.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from typing import List, Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.atomic_files import write_json  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, command_main  # noqa: E402

log = logging.getLogger("megatron_sota.cli.eval_throughput")  # not __name__: that is "__main__" under -m

HF_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", required=True, help="megatron_sota checkpoint directory")
    parser.add_argument("--hf", required=True, help="its Hugging Face export (tools/convert_checkpoint.py export)")
    parser.add_argument("--tasks", required=True, help="lm-eval task names, comma-separated")
    parser.add_argument("--include-path", help="a directory of extra lm-eval task YAMLs (e.g. examples/lm_eval)")
    parser.add_argument("--batch-size", type=int, default=8, help="lm-eval's batch size for both (our micro-batch size)")
    parser.add_argument("--limit", type=int, help="documents per task (lm-eval's --limit)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda where torch sees one, else cpu")
    parser.add_argument("--dtype", choices=sorted(HF_DTYPES), help="both models' precision (default: fp32 on cpu, bf16 on cuda)")
    parser.add_argument("--report", help="write the table as JSON here")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    return args


def measure(name: str, model_args: str, args: argparse.Namespace) -> dict:
    """One backend: load seconds, evaluation seconds, seconds inside the model, requests per type, metrics per task."""
    import lm_eval
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from megatron_sota.lm_eval.counting import CountingLM

    start = time.perf_counter()
    inner = get_model(name).create_from_arg_string(model_args, {"batch_size": args.batch_size, "device": args.device})
    load_s = time.perf_counter() - start
    model = CountingLM(inner)
    task_manager = TaskManager(include_path=args.include_path) if args.include_path else None
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(model=model, tasks=args.tasks.split(","), limit=args.limit, batch_size=args.batch_size,
                                      task_manager=task_manager)
    eval_s = time.perf_counter() - start
    total = sum(model.requests.values())
    metrics = {task: {k.split(",")[0]: v for k, v in values.items() if k.endswith(",none") and "stderr" not in k}
               for task, values in results["results"].items()}
    return {
        "backend": name, "load_s": round(load_s, 3), "eval_s": round(eval_s, 3), "model_s": round(sum(model.seconds.values()), 3),
        "requests": dict(model.requests), "requests_per_s": round(total / eval_s, 2) if eval_s > 0 else None,
        "model_requests_per_s": round(total / sum(model.seconds.values()), 2) if total else None, "metrics": metrics,
    }


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: List[dict]) -> str:
    head = f"{'backend':<14}{'load s':>9}{'eval s':>9}{'model s':>9}{'requests':>10}{'req/s':>9}{'model req/s':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:<14}{r['load_s']:>9.2f}{r['eval_s']:>9.2f}{r['model_s']:>9.2f}{sum(r['requests'].values()):>10}"
                     f"{_number(r['requests_per_s']):>9}{_number(r['model_requests_per_s']):>13}")
    for r in rows:
        for task, values in r["metrics"].items():
            lines.append(f"{r['backend']} {task}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items() if isinstance(v, float)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    import megatron_sota.lm_eval

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MegatronSotaError("eval_throughput runs on one process (the hf model has no tensor parallelism): run it without torchrun")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    try:
        ours = measure("megatron_sota", f"load={args.load},dtype={dtype}", args)
    finally:
        megatron_sota.lm_eval.close()
    from transformers import AutoTokenizer

    # A rolling document starts after the end-of-document token in both, as our model saw documents in training.
    eod = AutoTokenizer.from_pretrained(args.hf).eos_token_id
    theirs = measure("hf", f"pretrained={args.hf},dtype={HF_DTYPES[dtype]},prefix_token_id={eod}", args)
    rows = [ours, theirs]
    print(table(rows), flush=True)  # the command's product
    if args.report:
        write_json(args.report, {
            "checkpoint": args.load, "hf": args.hf, "tasks": args.tasks.split(","), "batch_size": args.batch_size,
            "limit": args.limit, "device": args.device, "dtype": dtype, "backends": rows,
            "speedup": round(ours["requests_per_s"] / theirs["requests_per_s"], 3) if theirs["requests_per_s"] else None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return command_main(argv, parse_args, run, log)


if __name__ == "__main__":
    sys.exit(main())
