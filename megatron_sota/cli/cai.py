"""CLI: constitutional AI. `critique` turns prompts into SFT conversations (response, critique, revision per
principle); `label` has a judge checkpoint choose between two responses per principle and writes preference pairs.

  python tools/cai.py critique --checkpoint <ckpt> --output sft.jsonl [--prompts p.jsonl] [--constitution c.yaml] [--revisions 1]
  python tools/cai.py label --judge <ckpt> --prompts comparisons.jsonl --output pairs.jsonl [--min-margin 0.2]
  python tools/cai.py label --judge <ckpt> --policy <ckpt> --prompts p.jsonl --output pairs.jsonl

One process (TP=1), or torchrun with one rank per TP shard; rank 0 writes. Argument parsing and files only; the work
is megatron_sota.posttrain.cai. Exit codes: 0 done, 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Optional, Sequence

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.config.generation import GenerationConfig  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.cai")  # not __name__: that is "__main__" under -m
SHIPPED_PROMPTS = "prompts.jsonl"


def _shipped_prompts() -> str:
    from importlib import resources

    return str(resources.files("megatron_sota.posttrain.cai").joinpath(SHIPPED_PROMPTS))


def _common(parser: argparse.ArgumentParser) -> None:
    d = GenerationConfig()
    parser.add_argument("--constitution", help="principles YAML (default: the shipped megatron_sota/posttrain/cai/constitution.yaml)")
    parser.add_argument("--output", required=True, help="JSONL written (atomically) on rank 0")
    parser.add_argument("--chat-template", help="Jinja template, or a directory with tokenizer_config.json (default: the "
                        "checkpoint's recorded post-training template, else the shipped ChatML)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per generated turn, capped by the context (default 256)")
    parser.add_argument("--temperature", type=float, default=d.temperature, help=f"0 = greedy (default {d.temperature})")
    parser.add_argument("--top-p", type=float, default=d.top_p)
    parser.add_argument("--top-k", type=int, default=d.top_k)
    parser.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    parser.add_argument("--batch-size", type=int, default=8, help="conversations generated together, left padded (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="principle draws and sampling (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose_flag(parser)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    critique = commands.add_parser("critique", help="prompts -> SFT conversations of revised responses")
    critique.add_argument("--checkpoint", required=True, help="the model that responds, critiques and revises")
    critique.add_argument("--prompts", default=None, help='JSONL of {"prompt": ...} (default: the shipped red-team and helpfulness prompts)')
    critique.add_argument("--revisions", type=int, default=1, help="critique-revision rounds per prompt, one drawn principle each (default 1)")
    _common(critique)
    label = commands.add_parser("label", help="two responses per prompt -> preference pairs chosen by a judge")
    label.add_argument("--judge", required=True, help="the checkpoint that answers (A) or (B)")
    label.add_argument("--prompts", required=True, help='JSONL of {"prompt", "response_a", "response_b"}, or of {"prompt"} with --policy')
    label.add_argument("--policy", help="checkpoint that samples the two responses of each prompt (needs --temperature > 0)")
    label.add_argument("--principles-per-comparison", type=int, default=2, help="principles drawn per comparison, their votes averaged (default 2)")
    label.add_argument("--min-margin", type=float, default=0.0, help="leave out pairs whose |P(chosen) - P(rejected)| is below this (default 0: ties only)")
    label.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward pass while scoring (default 8)")
    _common(label)
    args = parser.parse_args(argv)
    _refuse_out_of_range(parser, args)
    return args


def _refuse_out_of_range(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from megatron_sota.config.generation import generation_problems
    from megatron_sota.config.ranges import at_least, range_problems, within

    problems = generation_problems(args, name=lambda field: "--" + field.replace("_", "-"))
    checks = [("--batch-size", args.batch_size, at_least(1))]
    if args.command == "critique":
        checks.append(("--revisions", args.revisions, at_least(1)))
    else:
        checks += [("--principles-per-comparison", args.principles_per_comparison, at_least(1)),
                   ("--min-margin", args.min_margin, within(0, 1)), ("--micro-batch-size", args.micro_batch_size, at_least(1))]
        if args.policy and args.temperature == 0:
            problems.append("--policy with --temperature 0: greedy decoding gives the same response twice; set --temperature > 0")
    problems += range_problems(checks)
    if problems:
        parser.error("; ".join(problems))


def _progress(enabled: bool, total: int, name: str):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="turn", file=sys.stderr, leave=False)


def _write(path: str, records: Sequence[dict]) -> None:
    from megatron_sota.atomic_files import atomic_output

    with atomic_output(path) as handle:  # a failed run never leaves a half-written file
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _replier(model, tokenizer, checkpoint: str, args: argparse.Namespace, progress):
    from megatron_sota.inference.sampling import SamplingSettings
    from megatron_sota.posttrain.cai.respond import Replier, chat_template_of

    settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    template = chat_template_of(model, tokenizer, args.chat_template, checkpoint)
    return Replier(model, tokenizer, template, settings, args.max_new_tokens, args.batch_size, args.seed, progress)


def run_critique(args: argparse.Namespace) -> int:
    from megatron_sota.inference.text_model import inference_session, load_text_model
    from megatron_sota.posttrain.cai.constitution import load_constitution
    from megatron_sota.posttrain.cai.critique import critique_and_revise
    from megatron_sota.posttrain.cai.inputs import read_prompts

    principles = load_constitution(args.constitution)  # bad inputs fail before any model is loaded
    items = read_prompts(args.prompts or _shipped_prompts())
    with inference_session() as (env, session):
        model, tokenizer = load_text_model(args.checkpoint, session)
        turns = len(items) * (1 + 2 * args.revisions)
        with _progress(env.rank == 0 and not args.no_progress, turns, "critique") as bar:
            replier = _replier(model, tokenizer, args.checkpoint, args, bar.update if bar is not None else None)
            records = critique_and_revise(items, principles, args.revisions, args.seed, replier.reply)
    if env.rank == 0:
        _write(args.output, records)
        log.info("wrote %d SFT conversations (%d revision round(s) each) to %s", len(records), args.revisions, args.output)
    return 0


def run_label(args: argparse.Namespace) -> int:
    from megatron_sota.evaluation.eval_models import from_inference_model
    from megatron_sota.evaluation.runner import loglikelihoods
    from megatron_sota.inference.text_model import inference_session, load_text_model
    from megatron_sota.posttrain.cai.constitution import load_constitution
    from megatron_sota.posttrain.cai.inputs import has_responses, read_comparisons, read_prompts
    from megatron_sota.posttrain.cai.label import judge, preference_pairs, sampled_comparisons
    from megatron_sota.posttrain.cai.respond import chat_template_of

    principles = load_constitution(args.constitution)
    if args.policy is None and not has_responses(args.prompts):
        raise MegatronSotaError(f"{args.prompts}: expected records with 'response_a' and 'response_b', or --policy to sample them")
    comparisons = read_comparisons(args.prompts) if args.policy is None else None
    items = read_prompts(args.prompts) if args.policy is not None else None
    with inference_session() as (env, session):
        show = env.rank == 0 and not args.no_progress
        if items is not None:
            policy, policy_tokenizer = load_text_model(args.policy, session)
            with _progress(show, 2 * len(items), "policy") as bar:
                comparisons = sampled_comparisons(items, _replier(policy, policy_tokenizer, args.policy, args, bar.update if bar is not None else None).reply)
            del policy
        model, tokenizer = load_text_model(args.judge, session)
        template = chat_template_of(model, tokenizer, args.chat_template, args.judge)
        scorer = from_inference_model(model, tokenizer, args.micro_batch_size).scorer
        requests = 4 * args.principles_per_comparison * len(comparisons)
        with _progress(show, requests, "judge") as bar:
            judged = judge(comparisons, principles, args.principles_per_comparison, args.seed, tokenizer, template,
                           scorer.max_length, lambda reqs: loglikelihoods(scorer, reqs, bar.update if bar is not None else None))
    pairs = preference_pairs(comparisons, judged, args.min_margin)
    if env.rank == 0:
        _write(args.output, pairs)
        log.info("wrote %d preference pairs from %d comparisons to %s", len(pairs), len(comparisons), args.output)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        return run_critique(args) if args.command == "critique" else run_label(args)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
