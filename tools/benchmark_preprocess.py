"""Benchmark: tools/preprocess_data.py end to end vs the raw tokenizer alone, same input, same cores.

The raw tokenizer's throughput on texts already in memory, split over the same number of
processes (or its own native threads, whichever is faster), is the limit for that tokenizer
on these cores; the tool must reach >= 0.95x of it. Both are measured in this one run,
back to back in each of --repeats rounds; the headline is the median of the per-round ratios.

With --megatron-lm PATH (Megatron-LM's own tools/preprocess_data.py, e.g. `git show
core_v0.16.1:tools/preprocess_data.py` from a Megatron-LM clone), each round also runs that tool and
this one as command lines with the same input, tokenizer, --append-eod and --workers, each in a fresh
process timed around its main() (imports excluded), alternating; the tool must be at least as fast.
Megatron-LM's tool imports megatron.training (not in the megatron-core wheel) only for its argument
parser; the benchmark supplies that parser in a temporary directory, and Megatron-LM's tokenizers
are megatron-core's own (megatron.core.tokenizers).

  python tools/benchmark_preprocess.py --input corpus.jsonl --workers 2 \
      --spm-model tok.model --hf-tokenizer hf_tok/ [--megatron-lm megatron_lm_preprocess_data.py]

A developer's script: it imports the installed megatron_sota (pip install -e . in a checkout).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.data.encode_worker import TokenizerSpec  # noqa: E402
from megatron_sota.data.preprocess import PreprocessOptions, preprocess  # noqa: E402
from megatron_sota.data.readers import DEFAULT_CHUNK_BYTES, iter_texts  # noqa: E402
from megatron_sota.data.tokenizer import build_tokenizer  # noqa: E402

_TEXTS: list[str] = []


def _raw_worker_init(spec: TokenizerSpec) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    spec.build()


def _raw_tokenize(args: tuple[TokenizerSpec, int, int]) -> int:
    spec, start, stop = args
    tokenizer = spec.build()
    return sum(len(ids) for ids in tokenizer.tokenize_batch(_TEXTS[start:stop]))


def raw_processes(spec: TokenizerSpec, workers: int, batch: int = 64) -> tuple[float, int]:
    """Seconds and tokens for tokenize_batch over all texts, spread over `workers` processes."""
    bounds = [(spec, i, min(i + batch, len(_TEXTS))) for i in range(0, len(_TEXTS), batch)]
    # Forked after _TEXTS is filled: workers read the texts from shared memory, no transfer.
    with multiprocessing.Pool(workers, initializer=_raw_worker_init, initargs=(spec,)) as pool:
        # Wait until every worker has loaded the model, without warming its caches on the texts.
        pool.map(_raw_tokenize, [(spec, 0, 0)] * workers, chunksize=1)
        start = time.perf_counter()
        tokens = sum(pool.imap(_raw_tokenize, bounds))
        return time.perf_counter() - start, tokens


def raw_native_threads(spec: TokenizerSpec, workers: int) -> tuple[float, int] | None:
    """The library's own multithreaded batch call in one process, where it has one."""
    # A fresh instance each time: a reused one would keep its word cache warm across repeats.
    tokenizer = build_tokenizer(spec.tokenizer_type, spec.model, spec.vocab_size)
    if spec.tokenizer_type.endswith("SentencePieceTokenizer"):
        processor = tokenizer._processor
        start = time.perf_counter()
        ids = processor.encode(_TEXTS, num_threads=workers)
        return time.perf_counter() - start, sum(len(i) for i in ids)
    if spec.tokenizer_type == "HuggingFaceTokenizer":
        # Rayon's pool size is fixed at first use; this process has not used it yet.
        os.environ["RAYON_NUM_THREADS"] = str(workers)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        start = time.perf_counter()
        ids = tokenizer.tokenize_batch(_TEXTS)
        return time.perf_counter() - start, sum(len(i) for i in ids)
    return None


def tool_end_to_end(
    spec: TokenizerSpec, inputs: list[str], workers: int, key: str, out_dir: str, chunk_bytes: int
) -> tuple[float, int]:
    options = PreprocessOptions(
        inputs=tuple(inputs),
        output_prefix=os.path.join(out_dir, "bench"),
        tokenizer=spec,
        json_keys=(key,),
        append_eod=True,
        workers=workers,
        chunk_bytes=chunk_bytes,
        progress=False,
    )
    start = time.perf_counter()
    stats = preprocess(options)
    return time.perf_counter() - start, stats.tokens


# megatron.training is Megatron-LM's, not megatron-core's; its tools/preprocess_data.py imports it for the
# tokenizer argument group and the legacy tokenizers. This stand-in declares the same flags (names and
# defaults of Megatron-LM core_v0.16.1's _add_tokenizer_args) and refuses --legacy-tokenizer, so the tool
# runs megatron-core's tokenizers. `megatron` is a namespace package: the directory merges into it.
_MEGATRON_TRAINING_STANDIN = {
    "__init__.py": '"""Stand-in for Megatron-LM\'s megatron.training (benchmark_preprocess.py)."""\n',
    "tokenizer.py": (
        "def build_tokenizer(args):\n"
        "    raise SystemExit('benchmark_preprocess.py runs Megatron-LM with megatron-core tokenizers; "
        "--legacy-tokenizer needs megatron.training')\n"
    ),
    "arguments.py": (
        "def _add_tokenizer_args(parser):\n"
        "    g = parser.add_argument_group(title='tokenizer')\n"
        "    for flag, kind, default in [('--vocab-size', int, None), ('--padded-vocab-size', int, None),\n"
        "                                ('--vocab-file', str, None), ('--merge-file', str, None),\n"
        "                                ('--vocab-extra-ids', int, 0), ('--tokenizer-type', str, None),\n"
        "                                ('--tokenizer-model', str, None), ('--tokenizer-metadata', str, None),\n"
        "                                ('--tiktoken-pattern', str, None), ('--tiktoken-num-special-tokens', int, 1000)]:\n"
        "        g.add_argument(flag, type=kind, default=default)\n"
        "    for flag in ('--tokenizer-special-tokens', '--tiktoken-special-tokens'):\n"
        "        g.add_argument(flag, type=str, nargs='+', default=None)\n"
        "    for flag in ('--legacy-tokenizer', '--tokenizer-sentencepiece-legacy', '--tokenizer-hf-use-fast',\n"
        "                 '--tokenizer-hf-include-special-tokens', '--trust-remote-code'):\n"
        "        g.add_argument(flag, action='store_true', default=False)\n"
        "    return parser\n"
    ),
}

# Runs one tool's main() in a fresh process, timed after its imports: argv = which, tool path, tool args.
_LAUNCHER = """
import importlib.util, json, sys, time
which, tool, *argv = sys.argv[1:]
if which == "megatron-lm":
    spec = importlib.util.spec_from_file_location("megatron_lm_preprocess_data", tool)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the pool's workers unpickle its Encoder by this name
    spec.loader.exec_module(module)
    sys.argv = [tool, *argv]
    run = module.main
else:
    from megatron_sota.cli.preprocess_data import main
    run = lambda: main(argv)
start = time.perf_counter()
code = run()
print(json.dumps({"seconds": time.perf_counter() - start, "code": code or 0}))
"""


def _write_standin(directory: str) -> str:
    package = os.path.join(directory, "megatron", "training")
    os.makedirs(package)
    for name, text in _MEGATRON_TRAINING_STANDIN.items():
        with open(os.path.join(package, name), "w") as f:
            f.write(text)
    return directory


def command_line_tools(
    name: str, spec: TokenizerSpec, args: argparse.Namespace, out_dir: str, standin: str
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Per tool: (argv of _LAUNCHER, environment); same input, tokenizer, --append-eod and --workers."""
    common = ["--input", *args.input, "--json-keys", args.json_key, "--append-eod", "--workers", str(args.workers)]
    if name == "SentencePiece":
        theirs = ["--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", spec.model]
    else:
        # Megatron-LM's fastest HF path: the fast (Rust) tokenizer, ids straight from its __call__.
        theirs = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", spec.model,
                  "--tokenizer-hf-use-fast", "--tokenizer-hf-include-special-tokens"]
    if len(args.input) > 1:
        raise SystemExit("--megatron-lm: Megatron-LM's tool takes one --input file")
    ours = ["--tokenizer-type", spec.tokenizer_type, "--tokenizer-model", spec.model, "--overwrite"]
    env = dict(os.environ)
    env_theirs = dict(env, PYTHONPATH=os.pathsep.join(p for p in (standin, env.get("PYTHONPATH")) if p))
    return {
        "megatron_lm": (
            ["megatron-lm", args.megatron_lm, *common, *theirs, "--output-prefix", os.path.join(out_dir, "mlm")],
            env_theirs,
        ),
        "ours": (
            ["ours", "preprocess_data", *common, *ours, "--output-prefix", os.path.join(out_dir, "ours")],
            env,
        ),
    }


def run_command_line(argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], env=env, capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if done.returncode != 0 or result is None or result["code"] != 0:
        raise SystemExit(f"{argv[0]} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return result["seconds"]


def _same_output(out_dir: str, key: str) -> str:
    pairs = [os.path.join(out_dir, f"{who}_{key}_document") for who in ("ours", "mlm")]
    blobs = [[open(p + ext, "rb").read() for ext in (".bin", ".idx")] for p in pairs]
    if blobs[0] == blobs[1]:
        return "byte-identical"
    return "different bytes" + (" (same .bin)" if blobs[0][0] == blobs[1][0] else "")


def _fmt(seconds: list[float]) -> str:
    return "/".join(f"{s:.2f}" for s in seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--json-key", default="text")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20)
    parser.add_argument("--spm-model", default=None, help="SentencePiece .model")
    parser.add_argument("--hf-tokenizer", default=None, help="HF tokenizer.json or its directory")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    parser.add_argument(
        "--megatron-lm",
        default=None,
        help="Megatron-LM's tools/preprocess_data.py: also time it against this tool's command line",
    )
    args = parser.parse_args()

    _TEXTS.extend(iter_texts(args.input, args.json_key))
    text_mb = sum(len(t.encode("utf-8")) for t in _TEXTS) / 2**20
    specs = []
    if args.spm_model:
        specs.append(("SentencePiece", TokenizerSpec("SentencePieceTokenizer", model=args.spm_model)))
    if args.hf_tokenizer:
        specs.append(("HF BPE", TokenizerSpec("HuggingFaceTokenizer", model=args.hf_tokenizer)))
    if not specs:
        parser.error("give --spm-model and/or --hf-tokenizer")
    print(f"input: {len(_TEXTS):,} documents, {text_mb:,.1f} MB of text; {args.workers} workers "
          f"on {os.cpu_count()} cores; {args.repeats} rounds")
    results = []
    with tempfile.TemporaryDirectory() as out_dir:
        standin = _write_standin(os.path.join(out_dir, "standin")) if args.megatron_lm else ""
        for name, spec in specs:
            raw_proc, raw_native, tool = [], [], []
            cli: dict[str, list[float]] = {"ours": [], "megatron_lm": []}
            tokens = {}
            for round_number in range(args.repeats):

                def measure_raw() -> None:
                    seconds, tokens["raw"] = raw_processes(spec, args.workers)
                    raw_proc.append(seconds)
                    native = raw_native_threads(spec, args.workers)
                    if native is not None:
                        raw_native.append(native[0])

                def measure_tool() -> None:
                    seconds, tokens["tool"] = tool_end_to_end(
                        spec, args.input, args.workers, args.json_key, out_dir, int(args.chunk_mb * 2**20)
                    )
                    tool.append(seconds)

                # Alternate which goes first, so neither always runs on a warmer (or busier) machine.
                order = (measure_raw, measure_tool) if round_number % 2 == 0 else (measure_tool, measure_raw)
                for measure in order:
                    measure()
                if args.megatron_lm:
                    commands = command_line_tools(name, spec, args, out_dir, standin)
                    who = ["megatron_lm", "ours"] if round_number % 2 == 0 else ["ours", "megatron_lm"]
                    for tool_name in who:
                        cli[tool_name].append(run_command_line(*commands[tool_name]))
            # Each repeat measures the raw limit and the tool back to back; the ratio of each pair
            # cancels slow drifts of a shared machine, and its median is the headline number.
            # The faster raw method over all rounds is the limit. (Taking the per-round minimum of
            # two noisy raw timings would bias the limit low and the ratio with it.)
            raw_each = raw_proc
            if raw_native and statistics.median(raw_native) < statistics.median(raw_proc):
                raw_each = raw_native
            ratios = [r / t for r, t in zip(raw_each, tool)]
            raw_best = statistics.median(raw_each)
            row = {
                "tokenizer": name,
                "raw_processes_s": raw_proc,
                "raw_native_threads_s": raw_native or None,
                "tool_s": tool,
                "raw_mb_per_s": text_mb / raw_best,
                "tool_mb_per_s": text_mb / statistics.median(tool),
                "raw_tokens_per_s": tokens["raw"] / raw_best,
                "tool_tokens_per_s": tokens["tool"] / statistics.median(tool),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
            if args.megatron_lm:
                speedups = [m / o for m, o in zip(cli["megatron_lm"], cli["ours"])]
                row.update(
                    megatron_lm_s=cli["megatron_lm"],
                    ours_cli_s=cli["ours"],
                    vs_megatron_lm=statistics.median(speedups),
                    vs_megatron_lm_each=speedups,
                    megatron_lm_output=_same_output(out_dir, args.json_key),
                )
            results.append(row)
            print(
                f"{name:>13}: raw tokenizer {row['raw_mb_per_s']:6.2f} MB/s "
                f"({row['raw_tokens_per_s']:,.0f} tok/s) | preprocess_data {row['tool_mb_per_s']:6.2f} MB/s "
                f"({row['tool_tokens_per_s']:,.0f} tok/s) | ratio {row['ratio']:.2f} (target >= 0.95; "
                f"per repeat {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            print(
                f"{'':>13}  limit: {'native threads' if raw_each is raw_native else 'processes'}; "
                f"seconds: raw processes {_fmt(raw_proc)}, raw native threads "
                f"{_fmt(raw_native) if raw_native else 'n/a'}, preprocess_data {_fmt(tool)}"
            )
            if args.megatron_lm:
                print(
                    f"{'':>13}  vs Megatron-LM's tool, command lines, {args.workers} workers: "
                    f"{row['vs_megatron_lm']:.2f}x as fast (target >= 1.00; per repeat "
                    f"{', '.join(f'{r:.2f}' for r in row['vs_megatron_lm_each'])}); seconds: Megatron-LM "
                    f"{_fmt(cli['megatron_lm'])}, preprocess_data {_fmt(cli['ours'])}; outputs "
                    f"{row['megatron_lm_output']}"
                )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
