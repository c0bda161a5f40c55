"""CLI: merge indexed datasets into one, Megatron-LM style (`--input DIR --output-prefix P`).

Argument parsing and printing only (`megatron-sota-merge-datasets`, tools/merge_datasets.py); the work is megatron_sota.data.merge.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.cli.existing_outputs import refuse_replacing, shard_pair  # noqa: E402
from megatron_sota.data.merge import merge_datasets, prefixes_in_directory  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.merge_datasets")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="a directory (every .bin/.idx pair in it, sorted by name) or prefixes in merge order",
    )
    parser.add_argument("--output-prefix", required=True, help="writes <prefix>.bin/.idx")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing <prefix>.bin/.idx")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    start = time.perf_counter()
    try:
        refuse_replacing("--output-prefix", args.output_prefix, shard_pair(args.output_prefix), args.overwrite)
        if len(args.input) == 1 and os.path.isdir(args.input[0]):
            prefixes = prefixes_in_directory(args.input[0])
        else:
            prefixes = [p[: -len(".bin")] if p.endswith((".bin", ".idx")) else p for p in args.input]
        documents, tokens = merge_datasets(prefixes, args.output_prefix)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    size = os.path.getsize(args.output_prefix + ".bin") / 2**20
    log.info(
        f"merged {len(prefixes)} datasets into {args.output_prefix}.bin/.idx: {documents:,} documents, "
        f"{tokens:,} tokens, {size:,.1f} MiB in {time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
