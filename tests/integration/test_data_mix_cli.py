"""A three-source blend through the real command line: the mix table, data_mix.json and .png beside config.yaml."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.train_command import run_train
from tests.random_shards import write_shard

pytestmark = pytest.mark.slow


def test_blend_run_reports_its_realised_mix_beside_the_config(tmp_path):
    # Random-token shards read with NullTokenizer (tokenizer=none: the tiny preset's 8000 ids).
    web = [write_shard(str(tmp_path / f"web_{i}"), 300, seed=i) for i in range(2)]
    code = write_shard(str(tmp_path / "code"), 300, seed=2)
    books = write_shard(str(tmp_path / "books"), 300, seed=3)
    sources = (
        f"+data.sources={{web:{{weight:60,paths:['{web[0]}','{web[1]}'],weights:[2,1]}},"
        f"code:{{weight:30,paths:['{code}']}},books:{{weight:10,paths:['{books}']}}}}"
    )
    run_dir = tmp_path / "run"
    args = [
        sources, "model=tiny", "runtime.device=cpu", "train.iters=3", "train.seq_length=64",
        "train.global_batch_size=20", "train.micro_batch_size=10", "train.eval_interval=3", "train.eval_iters=1",
        "logging.interval=1", "checkpoint.save_at_end=false",
    ]
    result = run_train(args, run_dir)
    assert result.returncode == 0, "see captured stdout for the run's output"
    assert "data mix: 3 sources, 4 prefixes" in result.stdout
    assert os.path.isfile(run_dir / "config.yaml")
    with open(run_dir / "data_mix.json") as handle:
        mix = json.load(handle)
    assert mix["split_samples"] == {"train": 60, "valid": 20}
    train = {s["name"]: s["samples"]["train"] for s in mix["sources"]}
    # 60/30/10 of 60 samples; K = 4 prefixes bound megatron-core's rounding (see test_data_mix.py).
    assert sum(train.values()) == 60
    assert abs(train["web"] - 36) < 2 and abs(train["code"] - 18) < 3 and abs(train["books"] - 6) < 3
    assert [p["config_key"] for p in mix["prefixes"]][:2] == ["data.sources.web.paths[0]", "data.sources.web.paths[1]"]
    with open(run_dir / "data_mix.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_source_weight_exits_2_naming_the_key(tmp_path):
    result = run_train(["+data.sources={web:{weight:-1,paths:[/d/web]},code:{weight:1,paths:[/d/code]}}"], tmp_path / "run")
    assert result.returncode == 2
    assert "data.sources.web.weight=-1.0: expected a number >= 0" in result.stderr
    assert "Traceback" not in result.stderr
