"""Prints the training loss of several runs side by side from their metrics.jsonl files.

Usage: megatron-sota-compare-runs RUN_DIR [RUN_DIR ...] [--every 25]   (or python tools/compare_runs.py ...)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.compare_runs")  # not __name__: that is "__main__" under -m


def read_losses(run_dir: str) -> dict[int, float]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise MegatronSotaError(f"{path} does not exist (expected a run directory written by megatron_sota.train)")
    losses = {}
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            if "loss" in row:
                losses[row["step"]] = row["loss"]
    if not losses:
        raise MegatronSotaError(f"{path}: expected rows with a 'loss', found none")
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--every", type=int, default=1, help="show every Nth logged step")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        runs = [read_losses(r) for r in args.runs]
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    steps = sorted(set().union(*runs))
    shown = [s for i, s in enumerate(steps) if i % args.every == 0 or s == steps[-1]]
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    print("step".rjust(6) + "".join(n[:14].rjust(16) for n in names))
    for step in shown:
        cells = [f"{r[step]:.4f}" if step in r else "-" for r in runs]
        print(f"{step:>6}" + "".join(c.rjust(16) for c in cells))
    for name, r in zip(names, runs):
        first, last = r[min(r)], r[max(r)]
        print(f"{name}: loss {first:.4f} -> {last:.4f} ({'falling' if last < first else 'NOT falling'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
