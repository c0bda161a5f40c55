"""CLI: train a SentencePiece BPE tokenizer (unk=0, bos=1, eos=2, pad=3, byte fallback) from JSONL.

Argument parsing and printing only; the work is megatron_sota.data.tokenizer_training.
"""

from __future__ import annotations

import argparse
import os
import sys

# Runnable as `python tools/train_tokenizer.py` from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_sota.data.tokenizer_training import train_sentencepiece  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, help="JSONL (or .jsonl.gz) files")
    parser.add_argument("--json-key", default="text")
    parser.add_argument(
        "--model-prefix", required=True, help="writes <prefix>.model and <prefix>.vocab"
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--model-type", default="bpe", choices=["bpe", "unigram", "char", "word"])
    parser.add_argument("--character-coverage", type=float, default=1.0)
    parser.add_argument(
        "--max-sentence-length", type=int, default=4192, help="bytes; longer lines are skipped"
    )
    parser.add_argument(
        "--input-sentence-size",
        type=int,
        default=200_000,
        help="lines sampled (seeded) for training; 0 = all lines",
    )
    parser.add_argument("--num-threads", type=int, default=None, help="default: all CPU cores")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quiet", action="store_true", help="hide SentencePiece's progress log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = train_sentencepiece(
            args.input,
            args.model_prefix,
            vocab_size=args.vocab_size,
            json_key=args.json_key,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
            max_sentence_length=args.max_sentence_length,
            input_sentence_size=args.input_sentence_size,
            num_threads=args.num_threads,
            seed=args.seed,
            quiet=args.quiet,
        )
    except MegatronSotaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"trained {result.model_path} (vocab {result.vocab_size}) in {result.seconds:.1f}s "
        f"from {result.documents} documents: "
        f"{result.sentences_fed} of {result.sentences_seen} lines "
        f"sampled ({result.sentences_too_long} lines over {args.max_sentence_length} bytes skipped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
