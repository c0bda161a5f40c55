"""examples/slurm/ on a real single-node SLURM cluster: training at TP=2 on two tasks, preemption with
requeue and resume, the preprocessing array plus merge, a layout that does not fit the allocation, and
post-training (posttrain.sbatch) through the same script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "examples" / "slurm" / "pretrain.sbatch"
POSTTRAIN = REPO / "examples" / "slurm" / "posttrain.sbatch"
# The scripts ask for 8 GPUs and 16 CPUs per task; this 2-CPU node has neither.
CPU_JOB = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]


def _overrides(shards, iters: int, **extra) -> list[str]:
    values = {
        "runtime.device": "cpu", "model": "tiny", "parallel.tp": 2, "data.paths": f"[{shards.prefix}]",
        "tokenizer": "sentencepiece", "tokenizer.model": shards.tokenizer_model, "train.seq_length": 64,
        "train.global_batch_size": 8, "train.micro_batch_size": 2, "train.iters": iters, "train.eval_interval": 0,
        "optimizer.lr": "1e-3", "scheduler.warmup_iters": 2, "logging.interval": 1, "logging.tensorboard": "false",
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def _steps(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _job_env(run_dir: Path) -> dict:
    return {"RUN_DIR": str(run_dir), "MEGATRON_SOTA_REPO": str(REPO)}


def test_pretrain_sbatch_trains_tiny_at_tp2_on_two_tasks(slurm_cluster, stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    # logging.all_ranks: rank 1 prints its lines too, with its rank prefix, after srun's task label.
    overrides = _overrides(stdlib_shards, 25, **{"logging.all_ranks": "true"})
    job = slurm_cluster.submit(PRETRAIN, overrides, env=_job_env(run_dir), sbatch_options=[*CPU_JOB, f"--output={tmp_path}/slurm-%j.out"])
    info = slurm_cluster.wait(job, timeout=300)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), slurm_cluster.diagnostics(job)
    losses = _steps(run_dir)
    assert sorted(losses) == list(range(1, 26))
    assert losses[25] < losses[1] - 1.0
    log = (run_dir / "logs" / f"job-{job}.log").read_text()
    assert "0: layout: world 2 = tp 2" in log  # rank 0's information has no rank prefix
    assert "1: [rank 1] done at step 25: 25 steps" in log  # both tasks trained, each labelled by srun and by its rank


def test_usr1_saves_exits_preempted_requeues_and_the_requeued_job_resumes_and_finishes(slurm_cluster, stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    iters = 60
    job = slurm_cluster.submit(PRETRAIN, _overrides(stdlib_shards, iters), env=_job_env(run_dir), sbatch_options=[*CPU_JOB, f"--output={tmp_path}/slurm-%j.out"])
    deadline = time.monotonic() + 240
    while max(_steps(run_dir), default=0) < 3:
        assert time.monotonic() < deadline, slurm_cluster.diagnostics(job)
        time.sleep(0.5)
    slurm_cluster.signal_job(job, "USR1")  # what --signal=USR1@300 sends before the time limit
    info = slurm_cluster.wait(job, timeout=300, min_restarts=1)
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", 0, 1), slurm_cluster.diagnostics(job)
    output = info.output()
    assert "training exited with code 75" in output and "requeueing" in output and "(restart 1)" in output
    log = (run_dir / "logs" / f"job-{job}.log").read_text()
    stopped = int(re.search(r"stopped at step (\d+): .*stop signal: checkpoint saved, exit code 75", log).group(1))
    assert 3 <= stopped < iters
    assert (run_dir / "checkpoints" / f"iter_{stopped:07d}").is_dir()
    assert re.search(rf"resumed from \S+iter_{stopped:07d} at iteration {stopped} ", log)  # the requeued run
    assert sorted(_steps(run_dir)) == list(range(1, iters + 1))  # every step once: none lost, none repeated


def test_a_layout_that_does_not_fit_the_tasks_fails_before_building_anything(slurm_cluster, stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    job = slurm_cluster.submit(PRETRAIN, _overrides(stdlib_shards, 5, **{"parallel.tp": 4}), env=_job_env(run_dir), sbatch_options=[*CPU_JOB, f"--output={tmp_path}/slurm-%j.out"])
    info = slurm_cluster.wait(job, timeout=120)
    assert info.state == "FAILED" and info.exit_code != 0
    log = (run_dir / "logs" / f"job-{job}.log").read_text()
    assert "SLURM_NTASKS=2" in log and "parallel.tp*parallel.pp*parallel.cp = 4*1*1 = 4" in log
    assert "model tiny" not in log and not (run_dir / "checkpoints").exists()


def test_posttrain_sbatch_runs_sft_at_tp2_on_two_tasks(slurm_cluster, tmp_path):
    from megatron_sota.posttrain.example_data import write_example_data
    from tests.chat_tokenizer import train_chat_tokenizer

    tokenizer = train_chat_tokenizer(tmp_path / "tokenizer")
    data = write_example_data(str(tmp_path / "data"), sft_examples=24, sft_valid=4)
    run_dir = tmp_path / "run"
    overrides = [
        "posttrain=sft", f"posttrain.train_files=[{data.sft_train}]", "posttrain.epochs=1", "runtime.device=cpu",
        "tokenizer=huggingface", f"tokenizer.model={tokenizer}", "parallel.tp=2", "model.num_layers=2",
        "train.seq_length=256", "train.global_batch_size=4", "train.micro_batch_size=2", "logging.interval=1",
        "logging.tensorboard=false",
    ]
    options = [*CPU_JOB, f"--output={tmp_path}/slurm-%j.out"]
    job = slurm_cluster.submit(POSTTRAIN, overrides, env=_job_env(run_dir), sbatch_options=options)
    info = slurm_cluster.wait(job, timeout=300)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), slurm_cluster.diagnostics(job)
    log = (run_dir / "logs" / f"job-{job}.log").read_text()
    rows = int(re.search(r"24 conversations packed into (\d+) rows of 256 tokens", log).group(1))
    assert sorted(_steps(run_dir)) == list(range(1, rows // 4 + 1))
    assert "0: layout: world 2 = tp 2" in log


def test_preprocess_array_and_dependent_merge_equal_preprocessing_all_inputs_at_once(slurm_cluster, stdlib_shards, tmp_path):
    corpus = Path(stdlib_shards.prefix).parent / "stdlib.jsonl"
    lines = corpus.read_text().splitlines(keepends=True)[:40]
    inputs = []
    for index, part in enumerate((lines[:20], lines[20:])):
        inputs.append(tmp_path / f"part{index}.jsonl")
        inputs[-1].write_text("".join(part))
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{path}\n" for path in inputs))
    flags = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", stdlib_shards.tokenizer_model, "--append-eod"]
    env = {**slurm_cluster.job_env({"MEGATRON_SOTA_REPO": str(REPO)}),
           "SBATCH_ARRAY_OPTIONS": f"--cpus-per-task=1 --output={tmp_path}/array-%A_%a.out",
           "SBATCH_MERGE_OPTIONS": f"--cpus-per-task=1 --output={tmp_path}/merge-%j.out"}
    submitted = subprocess.run(
        ["bash", str(REPO / "examples" / "slurm" / "submit_preprocess.sh"), str(listing), str(tmp_path / "merged"), *flags],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    array, merge = submitted.stdout.split()
    info = slurm_cluster.wait(merge, timeout=300)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), slurm_cluster.diagnostics(merge)
    assert sorted(p.name for p in (tmp_path / "merged.shards").iterdir()) == [
        f"shard_00000{i}_text_document.{ext}" for i in (0, 1) for ext in ("bin", "idx")
    ]
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", *map(str, inputs),
         "--output-prefix", str(tmp_path / "direct"), "--workers", "1", "--no-progress", *flags],
        check=True, capture_output=True,
    )
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"merged{suffix}").read_bytes() == (tmp_path / f"direct_text_document{suffix}").read_bytes()
    assert os.path.getsize(tmp_path / "merged.bin") > 0
