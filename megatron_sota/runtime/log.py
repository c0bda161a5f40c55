"""The project's console output: Python logging on the `megatron_sota` logger, a rank prefix, rank 0 only.

Library modules only call ``logging.getLogger(__name__)``; entry points call :func:`setup_logging` once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

PACKAGE_LOGGER = "megatron_sota"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
    """Passes rank 0's records, and every rank's warnings and errors (or everything with all_ranks)."""

    def __init__(self, all_ranks: bool = False):
        super().__init__()
        self.all_ranks = all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        rank, world = rank_and_world()
        record.rank_prefix = f"[rank {rank}] " if world > 1 else ""
        return self.all_ranks or rank == 0 or record.levelno >= logging.WARNING


class _Formatter(logging.Formatter):
    """`message` for information, `warning: message` / `error: message` above it, after the rank prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = getattr(record, "rank_prefix", "")
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        elif record.levelno < logging.INFO:
            text = f"debug [{record.name}]: {text}"
        return prefix + text


def setup_logging(level: str = "INFO", all_ranks: bool = False, stream: Optional[TextIO] = None) -> logging.Logger:
    """(Re)configures the package logger: one handler on `stream` (stdout), idempotent.

    The logger does not propagate, so Hydra's or a host application's root handlers do not print
    each line twice.
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"logging level must be one of {', '.join(LEVELS)}, got '{level}'")
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_megatron_sota", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler._megatron_sota = True
    handler.addFilter(RankFilter(all_ranks))
    handler.setFormatter(_Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(name)
    logger.propagate = False
    return logger
