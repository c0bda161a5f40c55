"""Rank, world size and rendezvous address come from torchrun's or SLURM's environment."""

from __future__ import annotations

from megatron_sota.runtime.launch_env import first_slurm_host, read_launch_env, slurm_port


def test_torchrun_environment():
    env = read_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == (
        3, 8, 1, "n1", 1234, "torchrun"
    )


def test_slurm_environment_without_torchrun():
    env = read_launch_env(
        {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_ID": "4242"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (9, 16, 1, "gpu007", "slurm")
    assert env.master_port == slurm_port("4242")


def test_torchrun_inside_slurm_wins_over_slurm_variables():
    env = read_launch_env({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "9"})
    assert (env.rank, env.world_size, env.launcher) == (0, 2, "torchrun")


def test_two_jobs_on_one_node_get_different_ports():
    assert slurm_port("1000") != slurm_port("1001")
    assert 20000 <= slurm_port("123456789") < 40000


def test_first_host_of_slurm_nodelists():
    assert first_slurm_host("node01") == "node01"
    assert first_slurm_host("gpu[003-005,9]") == "gpu003"
    assert first_slurm_host("a[12,14],b7") == "a12"
    assert first_slurm_host("rack[1-2]-node[01-04]") == "rack1-node01"
    assert first_slurm_host("a[3,1]b[2-3]c") == "a3b2c"


def test_slurm_master_address_is_the_first_host_of_a_multi_bracket_nodelist():
    env = read_launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_NODELIST": "rack[1-2]-node[01-04]"})
    assert env.master_addr == "rack1-node01"


def test_plain_process_is_a_world_of_one():
    env = read_launch_env({})
    assert (env.rank, env.world_size, env.launcher) == (0, 1, "single")
