"""CLI: tokenize a JSONL corpus into megatron-core .bin/.idx shards, with Megatron-LM's flag names.

Argument parsing and printing only; the work is megatron_sota.data.preprocess.
"""

from __future__ import annotations

import argparse
import os
import sys

# Runnable as `python tools/preprocess_data.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_sota.data.preprocess import preprocess_jsonl  # noqa: E402
from megatron_sota.data.tokenizer import TOKENIZER_TYPES  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="JSONL file (.jsonl or .jsonl.gz)")
    parser.add_argument("--json-keys", nargs="+", default=["text"], help="keys to tokenize")
    parser.add_argument(
        "--output-prefix", required=True, help="writes <prefix>_<key>_document.bin/.idx"
    )
    parser.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    parser.add_argument("--tokenizer-model", default=None, help="SentencePiece .model file")
    parser.add_argument("--vocab-size", type=int, default=None, help="NullTokenizer only")
    parser.add_argument("--append-eod", action="store_true", help="end every document with eod")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=64, help="lines per worker task")
    parser.add_argument(
        "--log-interval", type=int, default=1000, help="documents between progress-bar updates"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stats = preprocess_jsonl(
            args.input,
            args.output_prefix,
            args.tokenizer_type,
            tokenizer_model=args.tokenizer_model,
            vocab_size=args.vocab_size,
            json_keys=args.json_keys,
            append_eod=args.append_eod,
            workers=args.workers,
            chunksize=args.chunk_size,
            log_interval=args.log_interval,
            progress=not args.no_progress,
        )
    except MegatronSotaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
