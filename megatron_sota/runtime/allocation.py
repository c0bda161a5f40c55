"""Checks that a run's layout fits the processes and GPUs SLURM (or torchrun) gave it, before any work.

A layout that cannot fit fails in the first seconds of the job, naming the launcher's variables
and the config values, instead of wrapping two ranks onto one GPU or failing deep in model setup.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.launch_env import LaunchEnv


def tasks_on_this_node(environ: Mapping[str, str]) -> Optional[int]:
    """SLURM's task count for this node: SLURM_NTASKS_PER_NODE, else this node's entry of
    SLURM_TASKS_PER_NODE ('8(x2),4' lists counts per node); None outside SLURM."""
    if environ.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        return int(environ["SLURM_NTASKS_PER_NODE"])
    spec = environ.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return None
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    node = int(environ.get("SLURM_NODEID", 0))
    return counts[node] if node < len(counts) else None


def allocation_problems(parallel: ParallelConfig, env: LaunchEnv, environ: Mapping[str, str], visible_gpus: Optional[int]) -> list[str]:
    """Every way the layout does not fit the allocation; `visible_gpus` is None for a CPU run."""
    problems = []
    model_parallel = parallel.tp * parallel.pp * parallel.cp
    # Under torchrun or on one process the config check (validate_job) reports this with every other
    # config problem; under SLURM the task count comes from sbatch's options, so name them.
    if env.launcher == "slurm" and model_parallel >= 1 and env.world_size % model_parallel:
        problems.append(
            f"SLURM_NTASKS={environ.get('SLURM_NTASKS')} (SLURM_JOB_NUM_NODES={environ.get('SLURM_JOB_NUM_NODES', '?')}, "
            f"SLURM_NTASKS_PER_NODE={environ.get('SLURM_NTASKS_PER_NODE', environ.get('SLURM_TASKS_PER_NODE', '?'))}) "
            f"is not divisible by parallel.tp*parallel.pp*parallel.cp = "
            f"{parallel.tp}*{parallel.pp}*{parallel.cp} = {model_parallel}: ask for a multiple of {model_parallel} tasks"
        )
    if visible_gpus is not None:
        local_tasks = tasks_on_this_node(environ) if env.launcher == "slurm" else None
        if local_tasks is None:
            local_tasks = int(environ.get("LOCAL_WORLD_SIZE", 0)) or None
        gpus = (
            f"{visible_gpus} GPU(s) visible (SLURM_GPUS_ON_NODE={environ.get('SLURM_GPUS_ON_NODE', 'unset')}, "
            f"CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )
        if visible_gpus == 0:
            problems.append(f"the run wants a GPU (runtime.device) but this node has {gpus}")
        elif local_tasks is not None and local_tasks > visible_gpus:
            variable = "SLURM_NTASKS_PER_NODE" if env.launcher == "slurm" else "LOCAL_WORLD_SIZE"
            problems.append(
                f"{variable}={local_tasks} tasks on this node but {gpus}: one task per GPU "
                f"(--ntasks-per-node must not exceed --gpus-per-node)"
            )
        elif env.local_rank >= visible_gpus:
            problems.append(f"local rank {env.local_rank} has no GPU of its own: {gpus}")
    return problems


def check_allocation(parallel: ParallelConfig, env: LaunchEnv, environ: Mapping[str, str], visible_gpus: Optional[int]) -> None:
    problems = allocation_problems(parallel, env, environ, visible_gpus)
    if problems:
        raise MegatronSotaError("the layout does not fit the allocation:\n  - " + "\n  - ".join(problems))
