"""CLI: write the running Python's standard library as a JSONL corpus (plus optional held-out file).

Argument parsing and printing only (`megatron-sota-build-stdlib-corpus`, tools/build_stdlib_corpus.py); the work is
megatron_sota.data.stdlib_corpus.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_sota.cli.existing_outputs import refuse_replacing
from megatron_sota.data.stdlib_corpus import write_stdlib_corpus
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.build_stdlib_corpus")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--max-files", type=int, default=None, help="cap on documents written")
    parser.add_argument("--min-chars", type=int, default=200, help="skip files shorter than this")
    parser.add_argument("--heldout-output", default=None, help="JSONL file for held-out documents")
    parser.add_argument("--heldout-fraction", type=float, default=0.01)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output (and --heldout-output)")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        refuse_replacing("--output", args.output, [args.output], args.overwrite)
        if args.heldout_output:
            refuse_replacing("--heldout-output", args.heldout_output, [args.heldout_output], args.overwrite)
        stats = write_stdlib_corpus(
            args.output,
            max_files=args.max_files,
            min_chars=args.min_chars,
            heldout_path=args.heldout_output,
            heldout_fraction=args.heldout_fraction,
        )
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    log.info(f"wrote {stats.docs} documents ({stats.bytes / 1e6:.1f} MB) to {args.output}")
    if args.heldout_output:
        log.info(
            f"wrote {stats.heldout_docs} held-out documents "
            f"({stats.heldout_bytes / 1e6:.2f} MB) to {args.heldout_output}"
        )
    log.info(
        f"skipped: {stats.skipped_not_utf8} not UTF-8, "
        f"{stats.skipped_short} shorter than {args.min_chars} chars"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
