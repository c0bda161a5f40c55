"""The command-line entry point end to end: real corpus, real tokenizer, one process and torchrun."""

from __future__ import annotations

import glob
import json
import os
import sys

import pytest
import yaml

from tests.integration.train_command import run_train


def _data_args(shards):
    return [
        f"data.paths=[{shards.prefix}]", "tokenizer=sentencepiece", f"tokenizer.model={shards.tokenizer_model}",
        "runtime.device=cpu", "train.seq_length=128", "train.global_batch_size=8", "train.micro_batch_size=4",
    ]


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow
def test_tiny_loss_falls_on_the_stdlib_corpus(stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    args = _data_args(stdlib_shards) + [
        "model=tiny", "train.iters=40", "optimizer.lr=1e-3", "scheduler.warmup_iters=5",
        "logging.interval=1", "train.eval_interval=20", "train.eval_iters=1",
    ]
    result = run_train(args, run_dir)
    assert result.returncode == 0, "see captured stdout for the run's output"
    rows = [r for r in _metrics(run_dir) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[0])
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 1.5, f"loss did not fall enough: {first:.3f} -> {last:.3f}"
    assert [r["step"] for r in _metrics(run_dir) if "val_loss" in r] == [20, 40]
    saved = yaml.safe_load(open(run_dir / "config.yaml"))
    assert saved["train"]["iters"] == 40 and saved["model"]["name"] == "tiny"
    assert glob.glob(str(run_dir / "tensorboard" / "events.out.tfevents.*"))
    assert "loss" in result.stdout and "parameters" in result.stdout
    # The resolved config is written in full and named in one line (printed whole only at DEBUG level).
    assert f"resolved config: {run_dir / 'config.yaml'}" in result.stdout
    assert "num_attention_heads" not in result.stdout
    assert (run_dir / "train.log").is_file()  # Hydra's job log is named after the entry point


@pytest.mark.slow
def test_torchrun_tp2_trains_and_only_rank0_writes_metrics(stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m")
    result = run_train(_data_args(stdlib_shards) + ["parallel.tp=2", "train.iters=3", "logging.interval=1"], run_dir, launcher)
    assert result.returncode == 0, "see captured stdout for the run's output"
    assert [r["step"] for r in _metrics(run_dir) if "loss" in r] == [1, 2, 3]
    assert "tp 2 x pp 1" in result.stdout


def test_config_mistake_exits_with_one_clear_line(tmp_path):
    result = run_train(["train.iterz=5"], tmp_path / "run")
    assert result.returncode == 2
    assert "unknown config key 'train.iterz' (did you mean 'iters'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")
