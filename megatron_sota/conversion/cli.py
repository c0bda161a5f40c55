"""Command line of checkpoint conversion: `export` (to Hugging Face) and `import` (from Hugging Face).

Argument parsing and reporting only; the work is in export.py and hf_import.py. Run it as
`python tools/convert_checkpoint.py ...` or `python -m megatron_sota.conversion.cli ...`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.conversion.cli")  # not __name__: that is "__main__" under -m


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert megatron_sota checkpoints to and from Hugging Face Llama format")
    sub = parser.add_subparsers(dest="direction", required=True)

    export = sub.add_parser("export", help="megatron_sota checkpoint (any TP/PP/DP layout) -> Hugging Face directory")
    export.add_argument("--load", required=True, help="checkpoint directory (its latest iteration) or an iter_NNNNNNN/ directory")
    export.add_argument("--save", required=True, help="Hugging Face directory to write")
    export.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="weight dtype (default bf16)")
    export.add_argument("--max-shard-size", default="5GB", help="largest safetensors file, e.g. 5GB or 500MB (default 5GB)")
    export.add_argument("--tokenizer-model", help="tokenizer to ship instead of the checkpoint's (.model file, tokenizer.json or its directory)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --save directory")
    export.add_argument("--pad-token-id", type=int, help="pad id for config.json instead of the tokenizer's (reward models need one other than eos)")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")

    imp = sub.add_parser("import", help="Hugging Face Llama directory -> megatron_sota checkpoint at a TP/PP layout")
    imp.add_argument("--load", required=True, help="Hugging Face model directory (config.json + safetensors)")
    imp.add_argument("--save", required=True, help="checkpoint directory to write")
    imp.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the written checkpoint")
    imp.add_argument("--pp", type=int, default=1, help="pipeline-parallel size of the written checkpoint")
    imp.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="stored weight dtype (default: config.json's)")
    imp.add_argument("--name", help="name of the model preset written beside the checkpoint (default: the directory's name)")
    imp.add_argument("--overwrite", action="store_true", help="replace a non-empty --save directory")
    for command in (export, imp):
        add_verbose_flag(command)
    return parser.parse_args(argv)


def _export(args: argparse.Namespace) -> None:
    from megatron_sota.conversion.export import ExportOptions, export_checkpoint, summary_text

    summary = export_checkpoint(
        ExportOptions(
            load=args.load, save=args.save, dtype=args.dtype, max_shard_size=args.max_shard_size,
            tokenizer_model=args.tokenizer_model, overwrite=args.overwrite, show_progress=not args.no_progress,
            pad_token_id=args.pad_token_id,
        )
    )
    log.info("%s", summary_text(summary))


def _import(args: argparse.Namespace) -> None:
    from megatron_sota.conversion.hf_import import ImportOptions, import_checkpoint

    summary = import_checkpoint(
        ImportOptions(load=args.load, save=args.save, tp=args.tp, pp=args.pp, dtype=args.dtype, name=args.name, overwrite=args.overwrite)
    )
    m = summary.model
    log.info(
        f"imported {args.load} ({summary.num_params:,} parameters: {m.num_layers} layers, hidden {m.hidden_size}, "
        f"{m.num_attention_heads} heads / {m.num_query_groups} KV groups) as {summary.checkpoint} at tp={args.tp} pp={args.pp} "
        f"in {summary.seconds:.1f}s\nmodel preset: {summary.preset_file}\n"
        f"continue training from it with:\n  python -m megatron_sota.train -cd {summary.out_dir}/conf model={m.name} "
        f"checkpoint.init_from={summary.out_dir} parallel.tp={args.tp} parallel.pp={args.pp} ..."
    )
    for note in summary.notes:
        log.info("note: %s", note)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        _export(args) if args.direction == "export" else _import(args)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
