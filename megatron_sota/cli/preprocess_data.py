"""CLI: tokenize a corpus into megatron-core .bin/.idx shards, with Megatron-LM's flag names.

Argument parsing and printing only (`megatron-sota-preprocess`, tools/preprocess_data.py); the work is megatron_sota.data.preprocess.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.cli.existing_outputs import refuse_replacing, shard_pair  # noqa: E402
from megatron_sota.data.encode_worker import TokenizerSpec  # noqa: E402
from megatron_sota.data.preprocess import PreprocessOptions, output_prefix_for, preprocess  # noqa: E402
from megatron_sota.data.readers import DEFAULT_CHUNK_BYTES  # noqa: E402
from megatron_sota.data.tokenizer import TOKENIZER_TYPES  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.preprocess_data")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_argument_group("input data")
    group.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="files, globs or directories: .jsonl/.json (optionally .gz or .zst), .parquet; "
        "in a directory every other file is one plain-text document",
    )
    group.add_argument("--json-keys", nargs="+", default=["text"], help="keys (parquet columns) to tokenize")
    group.add_argument("--split-sentences", action="store_true", help="one sequence per sentence")
    group.add_argument(
        "--keep-newlines", action="store_true", help="keep the newlines after sentences when splitting"
    )
    group.add_argument("--strict", action="store_true", help="stop at the first malformed record")

    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    group.add_argument(
        "--tokenizer-model",
        default=None,
        help="SentencePiece .model, HF tokenizer.json (or its directory), or TikToken vocab file",
    )
    group.add_argument("--vocab-file", default=None, help="GPT2BPETokenizer vocab.json")
    group.add_argument("--merge-file", default=None, help="GPT2BPETokenizer merges.txt")
    group.add_argument("--vocab-size", type=int, default=None, help="NullTokenizer vocabulary size")
    group.add_argument("--append-eod", action="store_true", help="end every document with eod")

    group = parser.add_argument_group("output data")
    group.add_argument(
        "--output-prefix", required=True, help="writes <prefix>_<key>_document.bin/.idx (or _sentence)"
    )
    group.add_argument("--overwrite", action="store_true", help="replace existing .bin/.idx files of --output-prefix")

    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="tokenizing processes (default: all cores)"
    )
    group.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="input slices finished one at a time; a re-run after an interruption keeps finished ones",
    )
    group.add_argument(
        "--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20, help="input MB per worker task"
    )
    group.add_argument("--log-interval", type=int, default=1000, help="documents between progress updates")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--keep-sequential-samples",
        action="store_true",
        help="accepted for Megatron-LM compatibility; input order is always kept",
    )
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    options = PreprocessOptions(
        inputs=tuple(args.input),
        output_prefix=args.output_prefix,
        tokenizer=TokenizerSpec(
            tokenizer_type=args.tokenizer_type,
            model=args.tokenizer_model,
            vocab_file=args.vocab_file,
            merge_file=args.merge_file,
            vocab_size=args.vocab_size,
        ),
        json_keys=tuple(args.json_keys),
        append_eod=args.append_eod,
        split_sentences=args.split_sentences,
        keep_newlines=args.keep_newlines,
        workers=args.workers,
        partitions=args.partitions,
        chunk_bytes=max(int(args.chunk_mb * 2**20), 1),
        strict=args.strict,
        log_interval=args.log_interval,
        progress=not args.no_progress,
    )
    try:
        finals = [output_prefix_for(options.output_prefix, key, options.level) for key in options.json_keys]
        refuse_replacing("--output-prefix", options.output_prefix, [f for p in finals for f in shard_pair(p)], args.overwrite)
        stats = preprocess(options)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: finished partitions are kept; run the same command again to resume")
        return 130
    log.info(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
