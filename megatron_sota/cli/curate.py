"""Curates raw text for pretraining on datatrove: length, language, Gopher/C4/FineWeb, code, toxicity, PII, dedup.

The first argument names the source config in conf/curate/ (web, code, papers, books, dialogue); Hydra overrides follow:

  python tools/curate.py web input.paths=[/data/cc] output_dir=/data/curated/web
  python tools/curate.py code input.paths=[src/] output_dir=out/code tasks=8 executor.workers=8
  python tools/curate.py web input.paths=[/data/cc] output_dir=/shared/web executor=slurm executor.partition=cpu tasks=512
  python tools/curate.py web ... tokenizer.type=SentencePieceTokenizer tokenizer.model=tok.model tokenize.enabled=true

Writes documents/, high_quality/ (quality score >= quality.threshold), rejected/<filter>/ (with the reason),
report.json/.txt/.png; re-running the same command resumes. Every key: megatron_sota/curation/config.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()  # the tokenize stage uses megatron-core's dataset writer

from megatron_sota.config.files import conf_dir  # noqa: E402
from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.curate")  # not __name__: that is "__main__" under -m

SOURCES = ("web", "code", "papers", "books", "dialogue")
CONFIG_DIR = conf_dir("curate")


def parse_args(argv=None) -> argparse.Namespace:
    lines = __doc__.splitlines()
    parser = argparse.ArgumentParser(description=lines[0], epilog="\n".join(lines[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=SOURCES, help="the config in conf/curate/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tasks=8 filters.language.min_score=0.8")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable file, malformed line or missing text key")
    parser.add_argument("--show-config", action="store_true", help="print the composed config and exit")
    add_verbose_flag(parser)
    return parser.parse_intermixed_args(argv)


def compose(source: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from megatron_sota.config.typed import check_override_keys, to_typed_config
    from megatron_sota.curation.config import CurateConfig, register_curate_schema

    check_override_keys(overrides, root=CurateConfig)
    register_curate_schema()
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            composed = hydra_compose(config_name=source, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise MegatronSotaError(f"config overrides {overrides}: {err}") from None
    return to_typed_config(composed, CurateConfig), OmegaConf.to_yaml(composed)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO")
    try:
        cfg, text = compose(args.source, list(args.overrides) + (["strict=true"] if args.strict else []))
        if args.show_config:
            print(text, end="")
            return 0
        from megatron_sota.curation.logs import quiet_datatrove
        from megatron_sota.curation.run import curate

        quiet_datatrove()
        curate(cfg, echo=log.info)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
