"""Times training steps of any preset and layout: tokens/s, TFLOP/s per device, MFU, peak memory, phases.

Hydra overrides select the run exactly as for training (mock data unless data.paths is given):

  python tools/benchmark.py model=tiny --steps 5                      # CPU, seconds
  python tools/benchmark.py model=llama_1b3 precision=bf16 train.seq_length=4096 \\
      train.micro_batch_size=4 train.global_batch_size=4 --steps 10 --json result.json
  torchrun --nproc-per-node 8 tools/benchmark.py model=llama_8b parallel.tp=2 ...
  python tools/benchmark.py model=gpt_125m train.seq_length=256 train.micro_batch_size=2 \
      train.global_batch_size=4 --compare-hf --steps 3 --rounds 5   # beside transformers, alternating

The FLOP formula and what each number means are in megatron_sota/perf/benchmark.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.atomic_files import write_text  # noqa: E402
from megatron_sota.config.compose import compose_job  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.benchmark")  # not __name__: that is "__main__" under -m


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=llama_1b3 parallel.tp=2")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, at least 2 (default 3)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense TFLOP/s per device for MFU (default: known GPUs' bf16 peak; none on CPU)")
    parser.add_argument("--no-forward-split", action="store_true",
                        help="skip the forward-only passes that split forward from backward time")
    parser.add_argument("--no-cpu-memory", action="store_true",
                        help="on CPU, do not count live tensors during warm-up (peak memory then n/a)")
    parser.add_argument("--compare-hf", action="store_true",
                        help="time transformers' LlamaForCausalLM on the same shape, batch, dtype and optimizer in the "
                             "same run, alternating rounds of --steps steps, and print the ratio (one process only)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds with --compare-hf (default 5)")
    parser.add_argument("--run-dir", default=os.path.join("outputs", "benchmark"),
                        help="where the datasets' index cache is written (shared by all ranks; default outputs/benchmark)")
    parser.add_argument("--json", dest="json_path", nargs="?", const="-", default=None,
                        help="write the result as JSON to this file (no file: print it as the last line)")
    add_verbose_flag(parser)
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.perf.benchmark import BenchmarkOptions, format_result, run_benchmark

    options = BenchmarkOptions(
        steps=args.steps,
        warmup=args.warmup,
        peak_tflops=args.peak_tflops,
        forward_passes=not args.no_forward_split,
        measure_cpu_memory=not args.no_cpu_memory,
        run_dir=args.run_dir,
    )
    try:
        if args.steps < 1:
            raise MegatronSotaError(f"--steps must be >= 1, got {args.steps}")
        if args.warmup < 2:
            raise MegatronSotaError(f"--warmup must be >= 2 (the first step allocates optimizer states), got {args.warmup}")
        if args.compare_hf:
            return _side_by_side(args, options)
        result = run_benchmark(compose_job(args.overrides), options)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 2
    if result is None:  # not rank 0
        return 0
    print(format_result(result), flush=True)
    _write_json(args.json_path, result)
    return 0


def _side_by_side(args, options) -> int:
    from megatron_sota.perf.side_by_side import format_side_by_side, run_side_by_side

    result = run_side_by_side(compose_job(args.overrides), options, args.rounds)
    print(format_side_by_side(result), flush=True)
    _write_json(args.json_path, result)
    return 0


def _write_json(path, result) -> None:
    if path is None:
        return
    text = json.dumps(dataclasses.asdict(result))
    if path == "-":
        print(text, flush=True)
    else:
        write_text(path, text + "\n")


if __name__ == "__main__":
    sys.exit(main())
