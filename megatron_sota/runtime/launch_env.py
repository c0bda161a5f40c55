"""Reads this process's rank, world size and rendezvous address from torchrun's or SLURM's env.

Functions of an environment mapping (and, for a SLURM nodelist, `scontrol show hostnames`); it must not
touch torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from megatron_sota.runtime.slurm_nodelist import slurm_hostnames


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str
    """torchrun, slurm or single."""


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist, the rendezvous host: 'rack[1-2]-node[01-04],cpu1' -> 'rack1-node01'."""
    return slurm_hostnames(nodelist)[0]


def slurm_port(job_id: Optional[str]) -> int:
    """A rendezvous port derived from the job id, so two jobs sharing a node do not collide."""
    if not job_id or not job_id.isdigit():
        return 29500
    return 20000 + int(job_id) % 20000


def read_launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or slurm_port(env.get("SLURM_JOB_ID"))),
            launcher="slurm",
        )
    return LaunchEnv(
        rank=0,
        world_size=1,
        local_rank=0,
        master_addr="127.0.0.1",
        master_port=int(env.get("MASTER_PORT", 0)) or free_port(),
        launcher="single",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it; a rendezvous binds it next)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
