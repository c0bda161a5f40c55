"""Faults during a real run through the command line: stop signals, a save killed part-way,
non-finite losses, and broken checkpoints at resume."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREEMPTED, DIVERGED = 75, 3
FAST = [
    "data.mock=true", "runtime.device=cpu", "train.seq_length=64", "train.global_batch_size=4",
    "train.micro_batch_size=2", "train.eval_interval=0", "logging.interval=1", "logging.tensorboard=false",
    # A schedule that does not depend on train.iters, so a run resumed with more iterations keeps it.
    "scheduler.warmup_iters=1", "scheduler.decay_iters=20",
]


def _command(run_dir, *overrides):
    return [sys.executable, "-m", "megatron_sota.train", *FAST, *overrides, f"hydra.run.dir={run_dir}"]


def _train(run_dir, *overrides, faults: str = ""):
    """Runs the trainer in its own session; afterwards kills whatever it left behind.

    A SIGKILLed trainer orphans its checkpoint-writer helper processes, which would keep the
    output pipes open; output therefore goes to files, and the whole process group is reaped.
    """
    env = {**os.environ, "MEGATRON_SOTA_FAULTS": faults}
    os.makedirs(run_dir, exist_ok=True)
    out_path, err_path = os.path.join(run_dir, "..", "stdout.txt"), os.path.join(run_dir, "..", "stderr.txt")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(_command(run_dir, *overrides), cwd=REPO, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            proc.wait(timeout=600)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    result = subprocess.CompletedProcess(proc.args, proc.returncode, open(out_path).read(), open(err_path).read())
    if result.returncode not in (0, PREEMPTED):
        print(result.stdout[-4000:], result.stderr[-6000:], sep="\n")
    return result


def _tracker(run_dir) -> int:
    with open(os.path.join(run_dir, "checkpoints", "latest_checkpointed_iteration.txt")) as handle:
        return int(handle.read())


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_sigterm_finishes_the_step_saves_and_exits_with_the_preempted_code(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _command(run_dir, "train.iters=500"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        if line.startswith("step      3/"):
            proc.send_signal(signal.SIGTERM)
            break
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == PREEMPTED, output[-3000:]
    saved = _tracker(run_dir)
    assert saved >= 3 and os.path.isdir(run_dir / "checkpoints" / f"iter_{saved:07d}")
    assert not [n for n in os.listdir(run_dir / "checkpoints") if n.endswith(".partial")]
    assert [r["step"] for r in _metrics(run_dir)] == list(range(1, saved + 1))
    assert "stop signal: checkpoint saved, exit code 75" in output


def test_save_killed_part_way_leaves_the_previous_checkpoint_in_charge(tmp_path):
    run_dir = tmp_path / "run"
    killed = _train(run_dir, "train.iters=6", "checkpoint.interval=2", faults="kill_during_save=4")
    assert killed.returncode == -signal.SIGKILL
    assert _tracker(run_dir) == 2
    assert os.path.isdir(run_dir / "checkpoints" / "iter_0000004.partial")
    logged_before = {r["step"]: r["loss"] for r in _metrics(run_dir)}

    resumed = _train(run_dir, "train.iters=6", "checkpoint.interval=2")
    assert resumed.returncode == 0
    assert "iter_0000004.partial (a save that never completed)" in resumed.stdout
    assert "at iteration 2 (8 samples consumed)" in resumed.stdout
    assert _tracker(run_dir) == 6
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # one line per step, steps 3-4 logged again
    assert {r["step"]: r["loss"] for r in rows if r["step"] <= 4} == logged_before  # and bitwise the same


def test_async_save_trains_identically_and_keeps_the_newest_checkpoints(tmp_path):
    sync = _train(tmp_path / "sync", "train.iters=6", "checkpoint.interval=2")
    background = _train(tmp_path / "async", "train.iters=6", "checkpoint.interval=2", "checkpoint.async_save=true", "checkpoint.keep=2")
    assert sync.returncode == background.returncode == 0
    assert [r["loss"] for r in _metrics(tmp_path / "async")] == [r["loss"] for r in _metrics(tmp_path / "sync")]
    assert "writing in the background" in background.stdout
    names = sorted(os.listdir(tmp_path / "async" / "checkpoints"))
    assert names == ["iter_0000004", "iter_0000006", "latest_checkpointed_iteration.txt"]


def test_a_nan_step_is_skipped_and_training_goes_on(tmp_path):
    result = _train(tmp_path / "run", "train.iters=5", "train.max_skipped_steps=2", faults="nan_loss=3")
    assert result.returncode == 0
    assert "step 3: skipped the update (loss nan" in result.stdout + result.stderr  # a warning
    rows = {r["step"]: r for r in _metrics(tmp_path / "run")}
    assert rows[3]["skipped"] is True and all(not rows[s]["skipped"] for s in (1, 2, 4, 5))


def test_consecutive_nan_steps_stop_the_run_naming_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = _train(run_dir, "train.iters=8", "checkpoint.interval=2", "train.max_skipped_steps=2", faults="nan_loss=3,4")
    assert result.returncode == DIVERGED
    assert "stopping after train.max_skipped_steps=2 consecutive non-finite steps" in result.stderr
    assert f"last good checkpoint: {run_dir}/checkpoints/iter_0000002" in result.stderr


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A run stopped by its wall-clock budget after its first step: its own test below, and the checkpoint the
    broken-checkpoint tests damage (one trainer start fewer than a separate clean run)."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    return run_dir, _train(run_dir, "train.iters=50", "train.exit_duration_minutes=0.0001")


@pytest.fixture
def saved_run(budget_run):
    run_dir, result = budget_run
    assert result.returncode == PREEMPTED and _tracker(run_dir) == 1
    return run_dir


def _broken_copy(saved_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    return run_dir, run_dir / "checkpoints" / "iter_0000001"


def test_checkpoint_of_another_shape_names_tensor_and_both_shapes(saved_run, tmp_path):
    run_dir, _ = _broken_copy(saved_run, tmp_path)
    result = _train(run_dir, "train.iters=4", "model.ffn_hidden_size=352")
    assert result.returncode == 2
    assert "does not fit the configured model" in result.stderr
    assert "decoder.layers.mlp.linear_fc2.weight: checkpoint [4, 256, 704], model [4, 256, 352]" in result.stderr


def test_truncated_checkpoint_is_reported_with_its_directory(saved_run, tmp_path):
    run_dir, ckpt = _broken_copy(saved_run, tmp_path)
    shard = sorted(p for p in os.listdir(ckpt) if p.endswith(".distcp"))[0]
    size = os.path.getsize(ckpt / shard)
    with open(ckpt / shard, "r+b") as handle:
        handle.truncate(size // 2)
    result = _train(run_dir, "train.iters=4")
    assert result.returncode == 2 and f"{ckpt}: loading failed" in result.stderr


def test_checkpoint_metadata_that_would_run_code_is_refused(saved_run, tmp_path):
    run_dir, ckpt = _broken_copy(saved_run, tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (ckpt / ".metadata").write_bytes(pickle.dumps(Exploit()))
    result = _train(run_dir, "train.iters=4")
    assert result.returncode == 2 and "refusing to unpickle posix.system" in result.stderr
    assert not os.path.exists(os.path.join(REPO, "pwned"))


def test_checkpoint_without_tensor_metadata_is_not_complete(saved_run, tmp_path):
    run_dir, ckpt = _broken_copy(saved_run, tmp_path)
    os.remove(ckpt / ".metadata")
    result = _train(run_dir, "train.iters=4")
    assert result.returncode == 2 and f"{ckpt}/.metadata is missing" in result.stderr


def test_wall_clock_budget_saves_and_exits_with_the_preempted_code(budget_run):
    run_dir, result = budget_run
    assert result.returncode == PREEMPTED
    assert "time budget (train.exit_duration_minutes): checkpoint saved, exit code 75" in result.stdout
    assert _tracker(run_dir) == 1
