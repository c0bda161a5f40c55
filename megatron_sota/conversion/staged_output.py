"""Writes a whole output directory under a temporary name and renames it into place when complete.

A failed or killed conversion therefore never leaves a half-written model where a finished one
is expected, and an existing non-empty directory is replaced only when asked to (`overwrite`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

from megatron_sota.errors import MegatronSotaError


def check_target(target: str, overwrite: bool, flag: str = "--save") -> None:
    if os.path.isfile(target):
        raise MegatronSotaError(f"{flag} {target}: is a file, expected a directory to write")
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise MegatronSotaError(f"{flag} {target}: directory exists and is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def staged_directory(target: str, overwrite: bool, flag: str = "--save") -> Iterator[str]:
    """Yields a fresh staging directory; on success it becomes `target` (replacing it if `overwrite`)."""
    target = os.path.abspath(target)
    check_target(target, overwrite, flag)
    staging = target + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replaced = target + ".replaced"
    if os.path.isdir(target):
        if os.listdir(target):
            os.rename(target, replaced)  # set aside, not deleted, until the new one is in place
        else:
            os.rmdir(target)
    os.rename(staging, target)
    shutil.rmtree(replaced, ignore_errors=True)
