"""Command line of generation: `python tools/generate.py --load <checkpoint> --prompt "..." | --prompt-file <jsonl>`.

Runs on one process (TP=1) or under torchrun with one rank per TP shard; rank 0 prints. Prompts
are generated one at a time (prompts of different lengths are not batched yet). Sampling
defaults come from conf/generation/default.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.inference.prompts import OVERFLOW_POLICIES, Prompt, fit_to_context, read_prompt_file  # noqa: E402

DEFAULTS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conf", "generation", "default.yaml")


def _defaults():
    from omegaconf import OmegaConf

    from megatron_sota.config.generation import GenerationConfig

    base = OmegaConf.structured(GenerationConfig)
    if os.path.exists(DEFAULTS_FILE):
        base = OmegaConf.merge(base, OmegaConf.load(DEFAULTS_FILE))
    return OmegaConf.to_object(base)


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable); the completion ends before it")
    parser.add_argument("--stop-id", type=int, action="append", default=[], help="extra stop token id (end-of-document always stops)")
    parser.add_argument("--overflow", choices=OVERFLOW_POLICIES, default="keep_end", help="a prompt longer than the context: keep its end, its start, or fail")
    return parser.parse_args(argv)


def _prompts(args: argparse.Namespace) -> Iterable[Prompt]:
    if args.prompt is not None:
        if not args.prompt:
            raise MegatronSotaError("--prompt is empty")
        yield Prompt(0, args.prompt)
    elif args.prompt_file:
        yield from read_prompt_file(args.prompt_file)
    else:
        for number, line in enumerate(sys.stdin, start=1):
            if line.strip():
                yield Prompt(number, line.rstrip("\n"))


def _complete(model, tokenizer, prompt: Prompt, args, settings) -> dict:
    import torch

    from megatron_sota.inference.generation import generate

    ids = tokenizer.tokenize(prompt.text)
    if not ids:
        raise MegatronSotaError(f"prompt {prompt.id}: tokenizes to no tokens")
    context = model.job.model.max_position_embeddings
    ids, dropped = fit_to_context(ids, context - 1, args.overflow)  # room for at least one new token
    max_new = min(args.max_new_tokens, context - len(ids))
    stop_ids = [tokenizer.eod, *args.stop_id]
    result = generate(model, torch.tensor([ids]), max_new, settings, stop_ids=stop_ids, seed=args.seed)
    new = result.tokens[0]
    reason = result.stop_reasons[0]
    text = tokenizer.detokenize(new[:-1] if reason == "stop_id" else new)
    cut = min((text.find(s) for s in args.stop if s in text), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop_string"
    return {
        "id": prompt.id, "prompt": prompt.text, "completion": text, "stop_reason": reason,
        "prompt_tokens": len(ids), "prompt_tokens_dropped": dropped, "completion_tokens": len(new),
        "seconds": round(result.seconds, 4), "tokens_per_s": round(len(new) / max(result.seconds, 1e-9), 2),
    }


def run(args: argparse.Namespace) -> None:
    from megatron_sota.data.tokenizer import build_configured_tokenizer
    from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
    from megatron_sota.inference.sampling import SamplingSettings
    from megatron_sota.runtime.launch_env import read_launch_env
    from megatron_sota.runtime.session import distributed_session

    env = read_launch_env()
    settings = SamplingSettings(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    with distributed_session(inference_parallel(env.world_size), "auto", env=env) as session:
        model = load_inference_model(args.load, session.device, "fp32" if session.is_cpu else None)
        if model.job.tokenizer.type in (None, "NullTokenizer"):
            raise MegatronSotaError(f"{args.load}: the model was trained without a text tokenizer (NullTokenizer); it cannot read prompts")
        tokenizer = build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
        # Written aside and renamed at the end: a failed run never leaves a half-written --output.
        output = open(args.output + ".partial", "w") if args.output and env.rank == 0 else None
        try:
            for prompt in _prompts(args):
                record = _complete(model, tokenizer, prompt, args, settings)
                if env.rank != 0:
                    continue
                if output:
                    output.write(json.dumps(record, ensure_ascii=False) + "\n")
                    output.flush()
                else:
                    print(record["completion"], flush=True)
                if record["prompt_tokens_dropped"]:
                    print(f"note: prompt {prompt.id}: {record['prompt_tokens_dropped']} tokens dropped ({args.overflow})", file=sys.stderr)
        except BaseException:
            if output:
                output.close()
                os.remove(args.output + ".partial")
            raise
        if output:
            output.close()
            os.replace(args.output + ".partial", args.output)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except MegatronSotaError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
