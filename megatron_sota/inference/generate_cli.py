"""Command line of generation: `python tools/generate.py --load <checkpoint> --prompt "..." | --prompt-file <jsonl>`.

Runs on one process (TP=1) or under torchrun with one rank per TP shard; rank 0 prints the completions
(the product, on stdout; messages go to stderr). Prompts
of a --prompt-file are generated --batch-size at a time, left padded to the batch's longest
(output in input order); --prompt and --interactive generate one prompt at a time, and so does
--num-beams > 1 (beam search). Sampling defaults come from conf/generation/default.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.config.files import conf_dir  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.inference.prompts import OVERFLOW_POLICIES, Prompt, prompt_ids, read_prompt_file  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

DEFAULTS_FILE = conf_dir("generation", "default.yaml")
log = logging.getLogger("megatron_sota.inference.generate_cli")  # not __name__: that is "__main__" under -m


def _defaults():
    from megatron_sota.config.generation import read_generation_defaults

    return read_generation_defaults(DEFAULTS_FILE)


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    d = _defaults()
    parser = argparse.ArgumentParser(description="Generate text from a megatron_sota checkpoint")
    parser.add_argument("--load", required=True, help="checkpoint directory (latest iteration) or iter_NNNNNNN/ directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt")
    source.add_argument("--prompt-file", help="JSONL, one {\"prompt\": ..., \"id\": ...} per line")
    source.add_argument("--interactive", action="store_true", help="read prompts from stdin, one per line")
    parser.add_argument("--output", help="write one JSON object per prompt here instead of printing completions")
    parser.add_argument("--temperature", type=float, default=d.temperature, help=f"0 = greedy (default {d.temperature})")
    parser.add_argument("--top-p", type=float, default=d.top_p)
    parser.add_argument("--top-k", type=int, default=d.top_k)
    parser.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="capped by the model's context")
    parser.add_argument(
        "--num-beams", type=int, default=d.num_beams,
        help=f"> 1: beam search, one prompt at a time, the best hypothesis printed; --temperature, --top-p, --top-k, "
        f"--repetition-penalty and --seed are then unused (default {d.num_beams})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable); the completion ends before it")
    parser.add_argument("--stop-id", type=int, action="append", default=[], help="extra stop token id (end-of-document always stops)")
    parser.add_argument("--overflow", choices=OVERFLOW_POLICIES, default="keep_end", help="a prompt longer than the context: keep its end, its start, or fail")
    parser.add_argument(
        "--batch-size", type=int, default=8,
        help="--prompt-file: prompts generated together, left padded (output keeps the input order; a record's seconds "
        "is its whole batch's time, tokens_per_s its own tokens over that time). Greedy completions do not depend on it; "
        "sampled ones do (a batch shares one seeded generator). --prompt and --interactive: one at a time (default 8)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    _refuse_out_of_range(parser, args, d)
    return args


def _refuse_out_of_range(parser: argparse.ArgumentParser, args: argparse.Namespace, defaults) -> None:
    """Usage errors (exit code 2) before any checkpoint is read: the sampling flags keep the ranges that
    conf/generation keeps (a negative temperature would favour the least likely tokens)."""
    from megatron_sota.config.generation import generation_problems
    from megatron_sota.config.ranges import at_least, range_problems

    bad_defaults = generation_problems(defaults)
    if bad_defaults:
        parser.error(f"{DEFAULTS_FILE}: " + "; ".join(bad_defaults))
    problems = generation_problems(args, name=lambda field: "--" + field.replace("_", "-"))
    problems += range_problems(
        [("--batch-size", args.batch_size, at_least(1)), *(("--stop-id", i, at_least(0)) for i in args.stop_id)]
    )
    if problems:
        parser.error("; ".join(problems))


def _batches(args: argparse.Namespace) -> Iterable[List[Prompt]]:
    """--prompt-file in batches of --batch-size; --prompt and stdin one prompt at a time."""
    if args.prompt is not None:
        if not args.prompt:
            raise MegatronSotaError("--prompt is empty")
        yield [Prompt(0, args.prompt)]
    elif args.prompt_file:
        prompts = read_prompt_file(args.prompt_file)
        for first in range(0, len(prompts), args.batch_size):
            yield prompts[first : first + args.batch_size]
    else:
        for number, line in enumerate(sys.stdin, start=1):
            if line.strip():
                yield [Prompt(number, line.rstrip("\n"))]


def _complete_batch(model, tokenizer, prompts: Sequence[Prompt], args, settings) -> List[dict]:
    """One record per prompt, generated as one left-padded batch; each row keeps its own budget."""
    from megatron_sota.inference.generation import generate

    context = model.job.model.max_position_embeddings
    fitted = [prompt_ids(tokenizer, prompt, context - 1, args.overflow) for prompt in prompts]  # room for a new token
    budgets = [min(args.max_new_tokens, context - len(ids)) for ids, _ in fitted]
    stop_ids = [tokenizer.eod, *args.stop_id]
    if args.num_beams > 1:
        return [
            _record(prompt, ids, dropped, *_best_beam(model, ids, args.num_beams, budget, stop_ids), tokenizer, args)
            for prompt, (ids, dropped), budget in zip(prompts, fitted, budgets)
        ]
    result = generate(model, [ids for ids, _ in fitted], budgets, settings, stop_ids=stop_ids, seed=args.seed)
    return [
        _record(prompt, ids, dropped, new, reason, result.seconds, tokenizer, args)
        for prompt, (ids, dropped), new, reason in zip(prompts, fitted, result.tokens, result.stop_reasons)
    ]


def _best_beam(model, ids: List[int], num_beams: int, budget: int, stop_ids: List[int]) -> Tuple[List[int], str, float]:
    """(new tokens, stop reason, seconds) of the best hypothesis of a beam search of one prompt."""
    from megatron_sota.inference.beam_search import beam_search

    result = beam_search(model, ids, num_beams, budget, stop_ids)
    return result.sequences[0], result.stop_reasons[0], result.seconds


def _record(prompt: Prompt, ids: List[int], dropped: int, new: List[int], reason: str, seconds: float, tokenizer, args) -> dict:
    text = tokenizer.detokenize(new[:-1] if reason == "stop_id" else new)
    cut = min((text.find(s) for s in args.stop if s in text), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop_string"
    return {
        "id": prompt.id, "prompt": prompt.text, "completion": text, "stop_reason": reason,
        "prompt_tokens": len(ids), "prompt_tokens_dropped": dropped, "completion_tokens": len(new),
        "seconds": round(seconds, 4), "tokens_per_s": round(len(new) / max(seconds, 1e-9), 2),
    }


def run(args: argparse.Namespace) -> None:
    from megatron_sota.atomic_files import atomic_output
    from megatron_sota.inference.sampling import SamplingSettings
    from megatron_sota.inference.text_model import inference_session, load_text_model

    settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    with inference_session() as (env, session):
        model, tokenizer = load_text_model(args.load, session)
        # Written aside and renamed at the end: a failed run never leaves a half-written --output.
        writes = args.output and env.rank == 0
        with atomic_output(args.output) if writes else contextlib.nullcontext() as output:
            for batch in _batches(args):
                records = _complete_batch(model, tokenizer, batch, args, settings)
                if env.rank == 0:
                    _emit(records, output, args.overflow)


def _emit(records: List[dict], output, overflow: str) -> None:
    for record in records:
        if output:
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
            output.flush()
        else:
            print(record["completion"], flush=True)
        if record["prompt_tokens_dropped"]:
            log.warning("prompt %s: %d tokens dropped (%s)", record["id"], record["prompt_tokens_dropped"], overflow)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        run(args)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
