"""Starts and ends a distributed session: device backend, process groups, model-parallel groups.

It must not build models or data; it only prepares the processes they run in.
"""

from __future__ import annotations

import contextlib
import datetime
import random
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_sota.config.machine import chosen_device, device_problem
from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.launch_env import LaunchEnv, read_launch_env


@dataclass(frozen=True)
class Session:
    env: LaunchEnv
    device: torch.device

    @property
    def is_cpu(self) -> bool:
        return self.device.type == "cpu"


def resolve_device(requested: str) -> torch.device:
    """runtime.device as a torch device; training runs pass the choice validate_job already checked."""
    cuda = torch.cuda.is_available()
    problems = device_problem(requested, cuda)
    if problems:
        raise MegatronSotaError(problems[0])
    return torch.device(chosen_device(requested, cuda))


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch; megatron-core's CUDA RNG tracker is seeded by the caller."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def distributed_session(
    parallel: ParallelConfig,
    device: str = "auto",
    timeout_minutes: int = 10,
    seed: int = 1234,
    env: Optional[LaunchEnv] = None,
) -> Iterator[Session]:
    """Initialises torch.distributed and megatron-core's parallel state; tears both down on exit."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_sota.runtime.cpu_compat import cpu_backend

    env = env or read_launch_env()
    torch_device = resolve_device(device)
    with contextlib.ExitStack() as stack:
        if torch_device.type == "cpu":
            stack.enter_context(cpu_backend())
            backend = "gloo"
        else:
            torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
            torch_device = torch.device("cuda", torch.cuda.current_device())
            backend = "nccl"
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://{env.master_addr}:{env.master_port}",
                rank=env.rank,
                world_size=env.world_size,
                timeout=datetime.timedelta(minutes=timeout_minutes),
            )
        stack.callback(_destroy_process_group)
        vpp = parallel.vpp if parallel.vpp and parallel.vpp > 1 else None
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel.tp,
            pipeline_model_parallel_size=parallel.pp,
            virtual_pipeline_model_parallel_size=vpp,
            context_parallel_size=parallel.cp,
        )
        stack.callback(parallel_state.destroy_model_parallel)
        seed_everything(seed)
        # megatron-core's tracker gives TP ranks distinct dropout streams; the model's
        # initial weights do not depend on it (see SeededTransformerLayer in model/layer_spec.py).
        model_parallel_cuda_manual_seed(seed)
        seed_everything(seed)
        yield Session(env=env, device=torch_device)
        # Only on success: after an error the other ranks may never reach a barrier.
        dist.barrier()


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
