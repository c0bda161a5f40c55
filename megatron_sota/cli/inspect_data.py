"""CLI: what a .bin/.idx pair holds (documents, tokens, dtype), sample N decoded, and a validity report.

Argument parsing and printing only (`megatron-sota-inspect-data`, tools/inspect_data.py); the work is
megatron_sota.data.shard_report.
Exit code 0 when the pair is consistent, 1 when a problem was found.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.data.shard_report import inspect_shard  # noqa: E402
from megatron_sota.data.tokenizer import TOKENIZER_TYPES, build_tokenizer  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.inspect_data")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="<prefix> of <prefix>.bin/.idx (a trailing .bin/.idx is dropped)")
    parser.add_argument("--sample", type=int, nargs="*", default=[], help="document numbers to print")
    parser.add_argument("--max-chars", type=int, default=2000, help="characters of each sample shown")
    parser.add_argument("--no-scan", action="store_true", help="skip reading every token (id range)")
    group = parser.add_argument_group("tokenizer (to decode samples and check ids against the vocabulary)")
    group.add_argument("--tokenizer-type", choices=TOKENIZER_TYPES, default=None)
    group.add_argument("--tokenizer-model", default=None)
    group.add_argument("--vocab-file", default=None)
    group.add_argument("--merge-file", default=None)
    group.add_argument("--vocab-size", type=int, default=None, help="NullTokenizer only")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def _show_sample(prefix: str, number: int, tokenizer, max_chars: int) -> None:  # type: ignore[no-untyped-def]
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)
    documents = len(dataset.document_indices) - 1
    if not 0 <= number < documents:
        raise MegatronSotaError(f"--sample {number}: expected a document number in [0, {documents}), found {number}")
    first, last = dataset.document_indices[number], dataset.document_indices[number + 1]
    ids = [int(t) for i in range(first, last) for t in dataset[i]]
    print(f"\n--- document {number}: {last - first} sequence(s), {len(ids)} tokens")
    if tokenizer is None:
        print(" ".join(str(i) for i in ids[:200]) + (" ..." if len(ids) > 200 else ""))
        return
    text = tokenizer.detokenize(ids)
    print(text[:max_chars] + (f"\n... ({len(text) - max_chars:,} more characters)" if len(text) > max_chars else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    prefix = args.prefix[:-4] if args.prefix.endswith((".bin", ".idx")) else args.prefix
    try:
        tokenizer = None
        if args.tokenizer_type:
            tokenizer = build_tokenizer(
                args.tokenizer_type, args.tokenizer_model, args.vocab_size,
                vocab_file=args.vocab_file, merge_file=args.merge_file,
            )
        report = inspect_shard(prefix, tokenizer.vocab_size if tokenizer else None, not args.no_scan)
        print(report.describe())
        if report.ok:
            for number in args.sample:
                _show_sample(prefix, number, tokenizer, args.max_chars)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
