"""CLI: builds one rank (or one per pipeline stage) of a training layout on this CPU machine and weighs it.

`megatron-sota-rehearse` / tools/rehearse.py takes the training command's own Hydra overrides plus the world size:

  python tools/rehearse.py --world-size 1024 --rank 0 model=sota_175b parallel.tp=4 parallel.pp=8 parallel.vpp=13 \\
      precision.dtype=bf16 train.seq_length=8192 train.global_batch_size=2048 parallel.sp=true
  python tools/rehearse.py --world-size 1024 --ranks model=sota_175b ...   # one rank per pipeline stage

Nothing is allocated (megatron_sota/rehearsal/, runtime/fake_world.py); a layout the real run would refuse is
reported with the real run's messages and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, command_main  # noqa: E402

log = logging.getLogger("megatron_sota.cli.rehearse")  # not __name__: that is "__main__" under -m


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, required=True, help="GPUs of the rehearsed run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rank", type=int, default=None, help="the global rank to build (default 0)")
    which.add_argument("--ranks", action="store_true", help="one rank per pipeline stage (tp, cp and dp rank 0)")
    parser.add_argument("--no-activations", action="store_true", help="skip the fake-tensor forward and backward")
    parser.add_argument("--init-time", action="store_true",
                        help="time the real initialisation of one layer on this CPU and extrapolate to the rank")
    parser.add_argument("--shards", action="store_true", help="list every checkpoint shard the rank writes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("overrides", nargs="*", help="the training command's Hydra overrides (model=..., parallel.tp=...)")
    add_verbose_flag(parser)
    return parser.parse_intermixed_args(argv)


def run(args: argparse.Namespace) -> int:
    from megatron_sota.config.compose import compose_job
    from megatron_sota.rehearsal.report import format_rehearsal, rehearsal_json
    from megatron_sota.rehearsal.run import Rehearsal, RehearsalOptions, layout_problems, rehearse, stage_ranks

    if args.world_size < 1:
        raise MegatronSotaError(f"--world-size must be >= 1, got {args.world_size}")
    job = compose_job(args.overrides)
    problems = layout_problems(job, args.world_size)
    if problems:
        log.error("the real run would refuse this layout at world size %d:\n  - %s", args.world_size, "\n  - ".join(problems))
        if args.json:
            print(json.dumps({"world_size": args.world_size, "problems": problems}, indent=2))
        return 1
    ranks = stage_ranks(job, args.world_size) if args.ranks else [args.rank or 0]
    options = RehearsalOptions(activations=not args.no_activations, init_time=args.init_time)
    results: List[Rehearsal] = [rehearse(job, args.world_size, rank, options) for rank in ranks]
    if args.json:
        print(json.dumps(rehearsal_json(job, results, args.shards), indent=2))
    else:
        print(format_rehearsal(job, results, args.shards))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return command_main(argv, parse_args, run, log)


if __name__ == "__main__":
    sys.exit(main())
