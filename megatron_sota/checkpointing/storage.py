"""Whether the checkpoint directory can take this run's checkpoints: a write probe before anything is built, and
the explanation of a save that failed (a full disk above all) in words a user can act on.

Filesystem only and no collectives: a save can fail on one rank alone, so nothing here may wait for the others.
It must not know what is inside a checkpoint.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from typing import List, Optional

from torch.distributed.checkpoint.api import CheckpointException

from megatron_sota.checkpointing import paths
from megatron_sota.config.run import CheckpointConfig
from megatron_sota.errors import MegatronSotaError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def saves_possible(cfg: CheckpointConfig, exit_duration_minutes: Optional[float]) -> bool:
    """Whether the run may write a checkpoint: periodically, at the end, on a stop signal, past its time
    budget, or for a Hugging Face export (which saves the step it exports)."""
    return (
        cfg.interval > 0 or cfg.save_at_end or cfg.exit_on_signal
        or exit_duration_minutes is not None or cfg.export_hf_every > 0
    )


def check_writable(save_dir: str, cfg: CheckpointConfig, exit_duration_minutes: Optional[float]) -> None:
    """Creates `save_dir` and writes and deletes a probe file in it, where the run may save at all.

    Called on every rank before any process group exists: each rank writes its own shards into the
    checkpoint, so each must be able to write there (a node that mounts the directory read-only fails here,
    alone, and its launcher stops the others).
    """
    if not saves_possible(cfg, exit_duration_minutes):
        return
    probe = os.path.join(save_dir, f".write_probe.{socket.gethostname()}.{os.getpid()}")
    try:
        os.makedirs(save_dir, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"megatron_sota checks that checkpoints can be written here\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.remove(probe)
    except OSError as err:
        raise MegatronSotaError(
            f"checkpoint.dir={save_dir} cannot be written ({_os_reason(err)}): this run's first checkpoint would "
            "fail after training up to it; set checkpoint.dir (or hydra.run.dir, where it defaults to "
            "<run dir>/checkpoints) to a directory this user can create and write"
        ) from None


def _os_reason(err: OSError) -> str:
    """'Permission denied [EACCES]: /data/ckpt': the platform's words, the errno's symbol and the path."""
    name = errno.errorcode.get(err.errno, "") if err.errno else ""
    text = err.strerror or str(err)
    return f"{text} [{name}]: {err.filename}" if err.filename else f"{text} [{name}]" if name else text


def _chain(err: BaseException) -> List[BaseException]:
    """The error, its causes and contexts, and the per-rank errors inside torch's CheckpointException."""
    found, todo = [], [err]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [current.__cause__, current.__context__]
        if isinstance(current, CheckpointException):
            todo += [failure for failure, _ in current.failures.values()]
    return found


def _writer_error(err: BaseException) -> str:
    """The first line of what the writer reported (in torch's CheckpointException: the first failed rank's error)."""
    if isinstance(err, CheckpointException) and err.failures:
        rank, (failure, _) = next(iter(err.failures.items()))
        return f"rank {rank}: {_writer_error(failure)}"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _restart_from(save_dir: str) -> str:
    try:
        latest = paths.latest_complete(save_dir)
        tracked = paths.read_tracker(save_dir)
    except MegatronSotaError as err:
        return f"The checkpoints already in {save_dir} cannot be resumed: {err}"
    if latest is None:
        return f"{save_dir} holds no earlier checkpoint: a restart begins at step 0."
    named = tracked is not None and latest == paths.iter_dir(save_dir, tracked)
    tracker = f" and {paths.TRACKER} still names it" if named else ""
    return f"The previous checkpoint {latest} is intact{tracker}: a restart with checkpoint.resume=auto continues from it."


def save_failure(save_dir: str, step: int, err: BaseException, expected_bytes: int) -> MegatronSotaError:
    """The error to raise after the save of `step` failed (rank 0 deletes its partial directory).

    A full disk is named as such where an errno says so or where the free space left cannot hold a
    checkpoint of the expected size: torch's zip writer reports it only as 'unexpected pos ...'.
    """
    name = os.path.basename(paths.iter_dir(save_dir, step))
    if isinstance(err, CheckpointException) and not err.failures:
        # torch gives the failure's details to its coordinator (rank 0) only; this rank's free-space
        # reading would race with rank 0 deleting the partial files.
        return MegatronSotaError(
            f"checkpoint {name} was not saved: writing it failed (rank 0's message says why). {_restart_from(save_dir)}"
        )
    free = _free_bytes(save_dir)
    errnos = {e.errno for e in _chain(err) if isinstance(e, OSError)}
    if errnos & set(_DISK_FULL) or (free is not None and free < expected_bytes):
        cause = (
            f"no space left on device ({_mib(free) if free is not None else 'unknown'} free in {save_dir}; "
            f"a checkpoint of this run takes about {_mib(expected_bytes)})"
        )
        fix = "free space there, lower checkpoint.keep, or set checkpoint.dir to a larger disk; then restart"
    else:
        cause = "writing it failed"
        fix = "remove the cause the writer reports below, then restart"
    return MegatronSotaError(
        f"checkpoint {name} was not saved: {cause}.\n  Its incomplete files were deleted. {_restart_from(save_dir)}"
        f"\n  To go on: {fix}.\n  (The writer reported: {_writer_error(err)})"
    )


def _free_bytes(path: str) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
