"""CLI: the share of each PPO/GRPO iteration spent generating, scoring and training, from a run's metrics.jsonl.

  python tools/rl_timing.py <run dir or metrics.jsonl> [--json]

Argument parsing and printing only; the work is megatron_sota.posttrain.rl_timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Sequence

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.rl_timing import iteration_times, read_metrics, timing_table
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.rl_timing")  # not __name__: that is "__main__" under -m


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a PPO/GRPO run directory, or its metrics.jsonl")
    parser.add_argument("--json", action="store_true", help="print one JSON object per iteration")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    path = os.path.join(args.run, "metrics.jsonl") if os.path.isdir(args.run) else args.run
    try:
        if not os.path.isfile(path):
            raise MegatronSotaError(f"{path}: no such file (expected a run directory holding metrics.jsonl)")
        times = iteration_times(read_metrics(path), path)
    except MegatronSotaError as err:
        log.error(str(err))
        return 1
    if args.json:
        for t in times:
            print(json.dumps({**dataclasses.asdict(t), "generation_share": t.generation_share}))
    else:
        print(timing_table(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
