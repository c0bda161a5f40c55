"""The tools' one rule for outputs that already exist: refused, each named, unless --overwrite was passed.

Checked before any work, so a mistyped prefix costs nothing; it must not delete or write (each tool replaces
its own outputs, as tools/convert_checkpoint.py does with its --save directory).
"""

from __future__ import annotations

import os
from typing import Sequence

from megatron_sota.errors import MegatronSotaError


def shard_pair(prefix: str) -> list[str]:
    """The two files of an indexed dataset prefix."""
    return [prefix + ".bin", prefix + ".idx"]


def refuse_replacing(flag: str, value: str, outputs: Sequence[str], overwrite: bool) -> None:
    """Raises, naming the files, when any of `outputs` (what `flag value` would write) exists and not `overwrite`."""
    existing = [path for path in outputs if os.path.lexists(path)]
    if not existing or overwrite:
        return
    named = existing[0] if len(existing) == 1 else ", ".join(existing[:-1]) + " and " + existing[-1]
    verb, them = ("exists", "it") if len(existing) == 1 else ("exist", "them")
    raise MegatronSotaError(f"{flag} {value}: {named} already {verb}; pass --overwrite to replace {them}")
