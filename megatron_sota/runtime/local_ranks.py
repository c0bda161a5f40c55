"""Runs a function on N gloo ranks on this machine, each a fresh process, and returns each rank's result.

Used by tests and by offline tools that must build the model at a given layout (checkpoint
import). The function is a module-level one (pickled by name) taking (rank, *args); its return
value travels back through a file. A rank that raises fails the whole call.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import traceback
from typing import Any, Callable, List

import torch
import torch.multiprocessing as mp

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.launch_env import free_port


_USER_ERROR = "MegatronSotaError: "

# Ranks are forked by multiprocessing's forkserver, a clean process that has imported these once: each rank still
# starts without a process group, a model or any state of the caller, but skips the ~3 s import of megatron-core
# that a spawned rank pays (on a 2-core machine, 4 spawned ranks spent ~9 s importing before their first step).
_PRELOAD = ("torch", "megatron.core", "megatron.core.models.gpt", "megatron.core.optimizer", "megatron.core.dist_checkpointing")


class RankFailure(RuntimeError):
    """A rank crashed (not a user error); carries every failed rank's traceback, and how a rank that died without one
    ended."""


def _rank_main(rank: int, fn: Callable, world_size: int, port: int, out_dir: str, environ: dict, args: tuple) -> None:
    # The forkserver started with the environment of its first caller; a rank sees its own caller's, as if spawned.
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1" if world_size > 1 else os.environ.get("OMP_NUM_THREADS", "2"),
    )
    torch.set_num_threads(1 if world_size > 1 else 2)
    try:
        result = fn(rank, *args)
    except MegatronSotaError as err:
        with open(os.path.join(out_dir, f"error_{rank}.txt"), "w") as handle:
            handle.write(f"{_USER_ERROR}{err}")
        raise
    except BaseException:
        with open(os.path.join(out_dir, f"error_{rank}.txt"), "w") as handle:
            handle.write(traceback.format_exc())
        raise
    torch.save(result, os.path.join(out_dir, f"result_{rank}.pt"))


def run_distributed(fn: Callable, world_size: int, *args: Any) -> List[Any]:
    """Starts `world_size` ranks running fn(rank, *args); returns their results in rank order."""
    multiprocessing.set_forkserver_preload(list(_PRELOAD))  # heeded when the forkserver starts (the first call)
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(
                _rank_main,
                args=(fn, world_size, free_port(), out_dir, dict(os.environ), args),
                nprocs=world_size,
                start_method="forkserver",
            )
        except Exception as err:
            errors = [
                open(os.path.join(out_dir, name)).read()
                for name in sorted(os.listdir(out_dir))
                if name.startswith("error_")
            ]
            user_errors = [text[len(_USER_ERROR):] for text in errors if text.startswith(_USER_ERROR)]
            if user_errors:
                raise MegatronSotaError(user_errors[0]) from None
            if isinstance(err, mp.ProcessExitedException) or not errors:
                # A rank that died without raising (a signal, an exit code) leaves no traceback: torch's account of
                # it ("process 1 terminated with signal SIGSEGV") is the only trace of what happened first.
                errors.append(str(err))
            raise RankFailure("a rank failed:\n" + "\n".join(errors)) from None
        return [torch.load(os.path.join(out_dir, f"result_{r}.pt"), weights_only=False) for r in range(world_size)]
