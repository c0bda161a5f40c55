"""Command line of SWE-bench predictions: `python tools/swebench_predictions.py --load <ckpt> --instances <jsonl>
--output preds.jsonl`.

Reads a local instance file (checked before the model loads), generates a greedy patch per instance and writes one
{"instance_id", "model_name_or_path", "model_patch"} line each, atomically, for the official harness to score.
Runs on one process (TP=1) or under torchrun with one rank per TP shard (rank 0 writes). Exit codes: 0 written,
1 an error (nothing written), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import List, Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.inference.prompts import OVERFLOW_POLICIES  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, command_main  # noqa: E402

log = logging.getLogger("megatron_sota.cli.swebench_predictions")  # not __name__: that is "__main__" under -m


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write SWE-bench predictions (JSONL) from a megatron_sota checkpoint")
    parser.add_argument("--load", required=True, help="checkpoint directory (latest iteration) or iter_NNNNNNN/ directory")
    parser.add_argument("--instances", required=True, help="SWE-bench instances as JSONL (instance_id, repo, base_commit, problem_statement, [hints_text, text])")
    parser.add_argument("--output", required=True, help="predictions JSONL to write")
    parser.add_argument("--model-name", help="model_name_or_path of every prediction (default: the checkpoint directory's name)")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="patch tokens per instance, capped by the context (default 1024)")
    parser.add_argument("--limit", type=int, help="the first N instances only")
    parser.add_argument("--batch-size", type=int, default=4, help="instances generated together, left padded (greedy replies do not depend on it)")
    parser.add_argument("--chat", action="store_true", help="send each prompt as one user turn of the chat template")
    parser.add_argument("--chat-template", help="with --chat: a .jinja file or tokenizer directory (default: the checkpoint's recorded template, else the shipped one)")
    parser.add_argument("--overflow", choices=OVERFLOW_POLICIES, default="error", help="a prompt longer than the context: fail (default), keep its end or its start")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.chat_template and not args.chat:
        parser.error("--chat-template needs --chat")
    if args.model_name is not None and not args.model_name.strip():
        parser.error("--model-name must not be empty")
    return args


def _chat(model, tokenizer, args: argparse.Namespace) -> dict:
    """PatchWriter's render, stop_ids and stop_text for --chat: the server's template (serving/chat.served_template),
    whose end of turn is a token, or for a checkpoint never post-trained, text."""
    from megatron_sota.serving.chat import served_template

    served = served_template(model.job, tokenizer, args.chat_template)

    def render(prompt: str) -> str:
        return served.prompt([{"role": "user", "content": prompt}])

    if served.stop:
        return {"render": render, "stop_ids": [], "stop_text": served.stop[0]}
    return {"render": render, "stop_ids": tokenizer.tokenize(served.template.end_of_turn), "stop_text": None}


def run(args: argparse.Namespace) -> int:
    from megatron_sota.atomic_files import atomic_output
    from megatron_sota.cli.existing_outputs import refuse_replacing
    from megatron_sota.evaluation.benchmark_files import read_swebench_instances
    from megatron_sota.evaluation.swebench import PatchWriter, extract_patch, prediction
    from megatron_sota.inference.text_model import inference_session, load_text_model

    instances = read_swebench_instances(args.instances)[: args.limit]  # a bad file fails before the model loads
    refuse_replacing("--output", args.output, [args.output], args.overwrite)
    model_name = args.model_name or os.path.basename(os.path.normpath(os.path.abspath(args.load)))
    with inference_session() as (env, session):
        model, tokenizer = load_text_model(args.load, session)
        chat = _chat(model, tokenizer, args) if args.chat else {}
        writer = PatchWriter(model, tokenizer, args.max_new_tokens, args.batch_size, overflow=args.overflow, **chat)
        with _progress(env.rank == 0 and not args.no_progress, len(instances)) as bar:
            replies = writer.replies(instances, bar.update if bar is not None else None)
    if env.rank != 0:
        return 0
    patches = [extract_patch(reply) for reply in replies]
    with atomic_output(args.output) as handle:  # a failed run never leaves a half-written file
        for instance, patch in zip(instances, patches):
            handle.write(json.dumps(prediction(instance.instance_id, model_name, patch), ensure_ascii=False) + "\n")
    empty = sum(1 for patch in patches if not patch)
    log.info("wrote %d predictions to %s (%d without a patch)", len(patches), args.output, empty)
    return 0


def _progress(enabled: bool, total: int):
    if not enabled:
        return contextlib.nullcontext()
    from tqdm import tqdm

    return tqdm(total=total, desc="swebench", unit="instance", file=sys.stderr, leave=False)


def main(argv: Optional[List[str]] = None) -> int:
    return command_main(argv, parse_args, run, log)


if __name__ == "__main__":
    sys.exit(main())
