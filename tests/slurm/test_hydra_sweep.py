"""A Hydra sweep submitted as SLURM jobs through hydra-submitit-launcher (conf/hydra/launcher/slurm.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]


def test_a_two_point_sweep_runs_as_two_slurm_jobs(slurm_cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "megatron_sota.train", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
         f"hydra.sweep.dir={sweep}", "optimizer.lr=1e-3,2e-3", "runtime.device=cpu", "data.mock=true", "model.num_layers=2",
         "train.iters=3", "train.seq_length=32", "train.global_batch_size=2", "train.micro_batch_size=1",
         "train.eval_interval=0", "logging.interval=1", "logging.tensorboard=false"],
        env=slurm_cluster.job_env(), capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:] + slurm_cluster.diagnostics()
    # one SLURM job per sweep point (submitit names them after the run's `name`); submitit returns
    # once each job wrote its result, possibly before SLURM marks the job completed
    assert len([job for job in slurm_cluster.jobs() if job.name == "run"]) == 2
    for point, lr in (("0", 1e-3), ("1", 2e-3)):
        config = yaml.safe_load((sweep / point / "config.yaml").read_text())
        assert config["optimizer"]["lr"] == lr
        steps = [json.loads(line)["step"] for line in (sweep / point / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        assert steps == [1, 2, 3]
