"""The project's console output: Python logging with a rank prefix, INFO from rank 0 only, warnings from every rank.

Library modules only call ``logging.getLogger(__name__)``; entry points call :func:`setup_logging` once.
It must not decide what is worth hiding by message (that is quiet.py) nor print a command's product.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional

from megatron_sota.config.run import LOG_LEVELS
from megatron_sota.errors import MegatronSotaError

PACKAGE_LOGGER = "megatron_sota"
# megatron-core logs every import, dataset and bucket decision at INFO: its records are shown from
# WARNING up, and at INFO too when the user asks for DEBUG.
MEGATRON_LOGGER = "megatron"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and world size: from torch.distributed once it is up, else the launcher's env."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a log line
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and world_key in os.environ:
            try:
                return int(os.environ[rank_key]), int(os.environ[world_key])
            except ValueError:
                break
    return 0, 1


class RankFilter(logging.Filter):
    """Passes rank 0's records and every rank's warnings and errors (everything with all_ranks).

    Marks the records that need to say which rank wrote them: on a multi-rank run, warnings and
    errors (any rank may send them) and, with all_ranks, every line.
    """

    def __init__(self, all_ranks: bool = False):
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        rank, world = rank_and_world()
        shown_by_every_rank = self.all_ranks or record.levelno >= logging.WARNING
        record.rank_prefix = f"[rank {rank}] " if world > 1 and shown_by_every_rank else ""
        return shown_by_every_rank or rank == 0


class ConsoleFormatter(logging.Formatter):
    """`message` for information; `warning: message`, `error: message`, `debug [logger]: message` otherwise.

    Records of other libraries' loggers name their logger, so a megatron-core warning reads as one.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ours = record.name == PACKAGE_LOGGER or record.name.startswith(PACKAGE_LOGGER + ".")
        if record.levelno >= logging.WARNING:
            origin = "" if ours else f" [{record.name}]"
            text = f"{record.levelname.lower()}{origin}: {text}"
        elif record.levelno < logging.INFO or not ours:
            text = f"{record.levelname.lower()} [{record.name}]: {text}"
        return getattr(record, "rank_prefix", "") + text


class ConsoleHandler(logging.StreamHandler):
    """Information to stdout (stderr for commands whose stdout is their product), warnings and errors to stderr.

    The streams are looked up at each record, so a redirected or captured sys.stdout is honoured.
    """

    def __init__(self, info_stream: str):
        super().__init__()
        self.info_stream = info_stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if record.levelno >= logging.WARNING else getattr(sys, self.info_stream)
        super().emit(record)


def setup_logging(level: str = "INFO", all_ranks: bool = False, info_stream: str = "stdout") -> logging.Logger:
    """(Re)configures the package's and megatron-core's console output; calling it again replaces the setup.

    `level` is one of LOG_LEVELS; `info_stream` is "stdout" or "stderr" (where records below WARNING go).
    The loggers do not propagate, so Hydra's or a host application's root handlers do not print
    each line twice.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"logging level: expected one of {', '.join(LOG_LEVELS)}, found {level!r}")
    if info_stream not in ("stdout", "stderr"):
        raise ValueError(f"info_stream: expected 'stdout' or 'stderr', found {info_stream!r}")
    handler = ConsoleHandler(info_stream)
    handler.addFilter(RankFilter(all_ranks))
    handler.setFormatter(ConsoleFormatter("%(message)s"))
    megatron_level = {"DEBUG": "INFO", "ERROR": "ERROR"}.get(level, "WARNING")
    for name, name_level in ((PACKAGE_LOGGER, level), (MEGATRON_LOGGER, megatron_level)):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(name_level)
        logger.propagate = False
    return logging.getLogger(PACKAGE_LOGGER)


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """The command-line tools' way to ask for more: pass ``"DEBUG" if args.verbose else "INFO"`` to setup_logging."""
    parser.add_argument(
        "--verbose", action="store_true", help="also debug lines and the libraries' own logs (megatron-core's INFO lines)"
    )


def command_main(argv: Optional[List[str]], parse_args: Callable, run: Callable, log: logging.Logger) -> int:
    """The main() of a command whose product goes to stdout: messages on stderr (--verbose: debug too), a user error
    logged as one line with exit code 1, else run(args)'s exit code."""
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        return run(args)
    except MegatronSotaError as err:
        log.error("%s", err)
        return 1
