"""A layout that does not fit the SLURM/torchrun allocation is refused up front, naming the variables and config values."""

from __future__ import annotations

import pytest

from megatron_sota.config.parallel import ParallelConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.allocation import allocation_problems, check_allocation, tasks_on_this_node
from megatron_sota.runtime.launch_env import read_launch_env

SLURM_3_TASKS = {"SLURM_PROCID": "0", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "3", "SLURM_JOB_ID": "7"}


def test_tasks_not_divisible_by_the_model_parallel_size_names_slurm_variables_and_config():
    problems = allocation_problems(ParallelConfig(tp=2), read_launch_env(SLURM_3_TASKS), SLURM_3_TASKS, None)
    assert len(problems) == 1
    assert "SLURM_NTASKS=3" in problems[0] and "SLURM_NTASKS_PER_NODE=3" in problems[0]
    assert "parallel.tp*parallel.pp*parallel.cp = 2*1*1 = 2" in problems[0]


def test_more_tasks_per_node_than_gpus_is_refused():
    environ = {**SLURM_3_TASKS, "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}
    with pytest.raises(MegatronSotaError) as info:
        check_allocation(ParallelConfig(tp=2), read_launch_env(environ), environ, visible_gpus=2)
    message = str(info.value)
    assert "SLURM_NTASKS_PER_NODE=4 tasks on this node but 2 GPU(s) visible" in message
    assert "SLURM_GPUS_ON_NODE=2" in message and "CUDA_VISIBLE_DEVICES=0,1" in message


def test_a_fitting_layout_passes_on_gpus_and_on_cpu():
    environ = {**SLURM_3_TASKS, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "8", "SLURM_LOCALID": "7"}
    env = read_launch_env(environ)
    assert allocation_problems(ParallelConfig(tp=4, pp=2), env, environ, visible_gpus=8) == []
    assert allocation_problems(ParallelConfig(), read_launch_env({}), {}, None) == []


def test_torchrun_local_world_size_is_checked_against_gpus_and_its_world_size_left_to_the_config_check():
    environ = {"RANK": "0", "WORLD_SIZE": "6", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "6"}
    problems = allocation_problems(ParallelConfig(tp=4), read_launch_env(environ), environ, visible_gpus=4)
    assert len(problems) == 1 and "LOCAL_WORLD_SIZE=6 tasks on this node but 4 GPU(s)" in problems[0]


@pytest.mark.parametrize("spec, node, expected", [("8(x2),4", "0", 8), ("8(x2),4", "2", 4), ("2", "0", 2)])
def test_tasks_per_node_from_slurm_tasks_per_node(spec, node, expected):
    assert tasks_on_this_node({"SLURM_TASKS_PER_NODE": spec, "SLURM_NODEID": node}) == expected
