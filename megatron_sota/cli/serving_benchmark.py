"""Load-tests an OpenAI-compatible server: p50/p99 latency, p50 time to first token, tokens/s, requests/s and errors.

Usage: megatron-sota-serving-benchmark --url http://127.0.0.1:8000 --requests 200 --concurrency 8 [1 ...] --max-tokens 64
       [--prompt TEXT | --prompt-file prompts.jsonl] [--model NAME] [--stream] [--chat] [--report report.json]
       (or python tools/serving_benchmark.py ...). Several --concurrency values run one after another (the batching gain).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

from megatron_sota.atomic_files import write_json
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.serving_benchmark")  # not __name__: that is "__main__" under -m

DEFAULT_PROMPT = "The history of the printing press"


def read_prompts(path: str) -> list[str]:
    """The prompts of a JSONL file of {"prompt": ...} objects (tools/generate.py's --prompt-file, read by its reader)."""
    from megatron_sota.inference.prompts import read_prompt_file

    return [prompt.text for prompt in read_prompt_file(path)]


def served_model(url: str, api_key: str | None) -> str:
    """The first model id of GET /v1/models (the server's only model, for ours)."""
    import httpx

    from megatron_sota.serving.load_test import api_base

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(api_base(url) + "/models", headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise MegatronSotaError(f"--model not given and {api_base(url)}/models named none ({type(err).__name__}: {err})") from err


def table(reports: list[dict]) -> str:
    header = f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'p50 s':>8} {'p99 s':>8} {'TTFT p50 s':>10} {'tokens/s':>9} {'requests/s':>10}"
    lines = [header]
    for r in reports:
        p50, p99, ttft = ("-" if r[key] is None else f"{r[key]:.3f}" for key in ("latency_p50_s", "latency_p99_s", "ttft_p50_s"))
        lines.append(
            f"{r['concurrency']:>11} {r['requests']:>8} {r['error_count']:>6} {p50:>8} {p99:>8} "
            f"{ttft:>10} {r['tokens_per_second']:>9.1f} {r['requests_per_second']:>10.2f}"
        )
    for r in reports:
        if r["errors_by_status"]:
            lines.append(f"concurrency {r['concurrency']}: errors by status {r['errors_by_status']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL (http://host:port or http://host:port/v1)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8], help="requests in flight at once (several: one run each)")
    parser.add_argument("--max-tokens", type=int, default=64)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", action="append", help="a prompt (repeatable; requests cycle through them)")
    source.add_argument("--prompt-file", help="JSONL, one {\"prompt\": ...} per line")
    parser.add_argument("--model", help="model name (default: the first of GET /v1/models)")
    parser.add_argument("--stream", action="store_true", help="stream (server-sent events); measures time to first token")
    parser.add_argument("--chat", action="store_true", help="POST /v1/chat/completions with the prompt as a user message")
    parser.add_argument("--temperature", type=float, help="default: the server's")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="Bearer key (default: $OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--warmup", type=int, default=0, help="requests sent (and not counted) before each run")
    parser.add_argument("--report", help="write the JSON report here (one object per concurrency level under \"runs\")")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")

    from megatron_sota.serving.load_test import LoadSettings, run_load_test

    problems = [f"--{name} must be at least 1, found {value}" for name, value in
                (("requests", args.requests), ("max-tokens", args.max_tokens), *(("concurrency", c) for c in args.concurrency)) if value < 1]
    try:
        if problems:
            raise MegatronSotaError("; ".join(problems))
        prompts = read_prompts(args.prompt_file) if args.prompt_file else args.prompt or [DEFAULT_PROMPT]
        model = args.model or served_model(args.url, args.api_key)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    reports = []
    for concurrency in args.concurrency:
        settings = LoadSettings(
            url=args.url, model=model, prompts=prompts, requests=args.requests, concurrency=concurrency, max_tokens=args.max_tokens,
            stream=args.stream, chat=args.chat, temperature=args.temperature, api_key=args.api_key, timeout=args.timeout,
        )
        if args.warmup:
            run_load_test(dataclasses.replace(settings, requests=args.warmup))
        log.info("%d requests at concurrency %d against %s", args.requests, concurrency, args.url)
        reports.append(run_load_test(settings))
    print(table(reports))
    print(f"percentiles: {reports[0]['percentile_method']}; latency and TTFT over successful requests; "
          "tokens/s = completion tokens (from usage) / wall seconds")
    if args.report:
        write_json(args.report, {"runs": reports}, indent=1)
        log.info("report written to %s", args.report)
    return 0 if all(r["succeeded"] for r in reports) else 2


if __name__ == "__main__":
    raise SystemExit(main())
