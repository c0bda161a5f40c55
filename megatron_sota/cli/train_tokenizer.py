"""CLI: train a SentencePiece (BPE/unigram) or Hugging Face byte-level BPE tokenizer from JSONL, parquet or text.

Argument parsing and printing only (`megatron-sota-train-tokenizer`, tools/train_tokenizer.py); the work is
megatron_sota.data.tokenizer_training.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from megatron_sota.cli.existing_outputs import refuse_replacing
from megatron_sota.data.tokenizer_corpus import MAX_VOCAB_SIZE, UINT16_VOCAB_LIMIT
from megatron_sota.data.tokenizer_training import (
    LIBRARIES,
    MODEL_TYPES,
    train_tokenizer,
)
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import add_verbose_flag, setup_logging

log = logging.getLogger("megatron_sota.cli.train_tokenizer")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_argument_group("input text")
    group.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="files, globs or directories: JSONL (.jsonl, .gz, .zst), parquet, or any other file "
        "as one plain-text document",
    )
    group.add_argument("--json-key", default="text", help="JSON key / parquet column of the text")
    group.add_argument(
        "--input-sentence-size",
        type=int,
        default=200_000,
        help="lines sampled (seeded, reproducible) for training; 0 = every line",
    )
    group.add_argument("--seed", type=int, default=1234, help="seed of the line sample")

    group = parser.add_argument_group("tokenizer")
    group.add_argument(
        "--library",
        default="sentencepiece",
        help=f"one of {', '.join(LIBRARIES)} (default sentencepiece)",
    )
    group.add_argument(
        "--model-prefix",
        required=True,
        help="sentencepiece: writes <prefix>.model and <prefix>.vocab; huggingface: a directory "
        "that gets tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.json "
        "and merges.txt",
    )
    group.add_argument(
        "--vocab-size",
        type=int,
        default=8000,
        help=f"up to {MAX_VOCAB_SIZE:,}, including special and byte pieces; from "
        f"{UINT16_VOCAB_LIMIT:,} on, preprocess_data.py writes int32 shards instead of uint16 "
        f"(megatron-core's DType.optimal_dtype), twice the disk",
    )
    group.add_argument(
        "--special-tokens",
        nargs="+",
        default=[],
        help="extra tokens that always encode as one id, e.g. <|user|> <|assistant|> <|system|>; "
        "built in: sentencepiece <unk> <s> </s>=EOD <pad>, huggingface <|endoftext|>=EOD <|pad|>",
    )
    group.add_argument(
        "--model-type", default=None, help=f"sentencepiece: one of {', '.join(MODEL_TYPES)} (default bpe)"
    )

    group = parser.add_argument_group("sentencepiece only")
    group.add_argument("--character-coverage", type=float, default=None, help="default 1.0")
    group.add_argument(
        "--max-sentence-length", type=int, default=None, help="bytes; longer lines are skipped (4192)"
    )
    group.add_argument("--num-threads", type=int, default=None, help="default: all CPU cores")

    group = parser.add_argument_group("huggingface only")
    group.add_argument(
        "--model-max-length",
        type=int,
        default=None,
        help="model_max_length in tokenizer_config.json (default: no limit)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing tokenizer at --model-prefix")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def _outputs(library: str, prefix: str) -> list[str]:
    """The files `library` writes for --model-prefix (none known for an unknown library: train_tokenizer names it)."""
    if library == "huggingface":
        from megatron_sota.data.byte_level_bpe_training import FILES

        return [os.path.join(prefix, name) for name in FILES]
    return [prefix + ".model", prefix + ".vocab"] if library == "sentencepiece" else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        refuse_replacing("--model-prefix", args.model_prefix, _outputs(args.library, args.model_prefix), args.overwrite)
        result = train_tokenizer(
            args.library,
            args.input,
            args.model_prefix,
            args.vocab_size,
            json_key=args.json_key,
            model_type=args.model_type,
            special_tokens=args.special_tokens,
            input_sentence_size=args.input_sentence_size,
            seed=args.seed,
            quiet=args.quiet,
            verbose=args.verbose,
            character_coverage=args.character_coverage,
            max_sentence_length=args.max_sentence_length,
            num_threads=args.num_threads,
            model_max_length=args.model_max_length,
        )
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    corpus = result.corpus
    skipped = f", {corpus.lines_too_long} too long skipped" if corpus.lines_too_long else ""
    log.info(
        f"trained {result.library} tokenizer (vocab {result.vocab_size}) in {result.seconds:.1f}s "
        f"from {corpus.documents} documents: {corpus.lines_used} of {corpus.lines_seen} lines "
        f"used{skipped}"
    )
    for path in result.files:
        log.info(f"  wrote {path}")
    log.info("megatron-sota-preprocess (tools/preprocess_data.py) flags for these files:")
    for flags in result.preprocess_flags:
        log.info(f"  {shlex.join(flags)}")
    if result.vocab_size >= UINT16_VOCAB_LIMIT:
        log.info(f"  (vocab >= {UINT16_VOCAB_LIMIT:,}: shards will hold int32 ids, 4 bytes per token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
