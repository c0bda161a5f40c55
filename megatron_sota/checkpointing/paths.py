"""Where checkpoints live and which one is the latest: directory names, tracker file, retention.

Pure filesystem logic (rank 0 calls the writers); it must not know what is inside a checkpoint.

Layout of a checkpoint directory:
  iter_0000100/                       complete checkpoints (renamed into place when every rank is done)
  iter_0000200.partial/               a save in progress, or one killed part-way (removed at next start)
  latest_checkpointed_iteration.txt   the newest complete iteration, replaced atomically
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Collection, List, Optional

from megatron_sota.atomic_files import write_text
from megatron_sota.errors import MegatronSotaError

TRACKER = "latest_checkpointed_iteration.txt"
PARTIAL_SUFFIX = ".partial"
_ITER_RE = re.compile(r"^iter_(\d{7})$")


def iter_dir(save_dir: str, step: int) -> str:
    return os.path.join(save_dir, f"iter_{step:07d}")


def partial_dir(save_dir: str, step: int) -> str:
    return iter_dir(save_dir, step) + PARTIAL_SUFFIX


def complete_iterations(save_dir: str) -> List[int]:
    if not os.path.isdir(save_dir):
        return []
    found = (_ITER_RE.match(name) for name in os.listdir(save_dir))
    return sorted(int(m.group(1)) for m in found if m)


def read_tracker(save_dir: str) -> Optional[int]:
    path = os.path.join(save_dir, TRACKER)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        text = handle.read().strip()
    if not text.isdigit():
        raise MegatronSotaError(f"{path}: expected an iteration number, found {text[:40]!r}")
    return int(text)


def write_tracker(save_dir: str, step: int) -> None:
    """Replaces the tracker atomically: readers see the old or the new iteration, never a torn file."""
    write_text(os.path.join(save_dir, TRACKER), f"{step}\n")


def latest_complete(save_dir: str) -> Optional[str]:
    """The checkpoint the tracker names (which must exist), else the newest complete one, else None."""
    tracked = read_tracker(save_dir)
    complete = complete_iterations(save_dir)
    if tracked is not None:
        if tracked not in complete:
            raise MegatronSotaError(
                f"{os.path.join(save_dir, TRACKER)} names iteration {tracked}, but {iter_dir(save_dir, tracked)} "
                f"does not exist (complete checkpoints there: {complete or 'none'})"
            )
        # A save killed between its rename and the tracker update leaves a newer complete one.
        return iter_dir(save_dir, max(tracked, complete[-1]))
    return iter_dir(save_dir, complete[-1]) if complete else None


def resolve_checkpoint_dir(target: str, what: str) -> str:
    """An iter_NNNNNNN/ directory, or a checkpoint directory (its latest complete iteration).

    `what` names the setting or flag the path came from, for error messages.
    """
    if not os.path.exists(target):
        raise MegatronSotaError(f"{what}={target}: no such file or directory")
    if os.path.exists(os.path.join(target, TRACKER)) or complete_iterations(target):
        latest = latest_complete(target)
        if latest is None:
            raise MegatronSotaError(f"{what}={target}: the directory holds no complete checkpoint")
        return latest
    if not os.path.exists(os.path.join(target, "metadata.json")):
        raise MegatronSotaError(
            f"{what}={target}: not a checkpoint (expected {target}/metadata.json, or "
            f"iter_NNNNNNN/ folders with {TRACKER})"
        )
    return target


def remove_partials(save_dir: str) -> List[str]:
    """Deletes leftovers of saves that never completed; returns what was removed."""
    if not os.path.isdir(save_dir):
        return []
    removed = []
    for name in os.listdir(save_dir):
        if name.endswith((PARTIAL_SUFFIX, ".replaced")):  # .replaced: an old copy set aside by a re-save
            shutil.rmtree(os.path.join(save_dir, name), ignore_errors=True)
            removed.append(name)
    return removed


def prune(save_dir: str, keep: int, pinned: Collection[int] = ()) -> List[int]:
    """Deletes all but the newest `keep` complete checkpoints (never the tracked or a pinned one)."""
    tracked = read_tracker(save_dir)
    complete = complete_iterations(save_dir)
    doomed = [step for step in complete[:-keep] if step != tracked and step not in pinned] if keep > 0 else []
    for step in doomed:
        shutil.rmtree(iter_dir(save_dir, step), ignore_errors=True)
    return doomed


def dir_size_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
