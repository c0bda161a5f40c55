"""tools/release_gate.py: a bad gate file is refused whole before a model loads, a failing check exits 3 naming every
failure, a passing gate exits 0, the reports agree with the rows, and a second run evaluates only new checkpoints."""

from __future__ import annotations

import json

import pytest

from megatron_sota.evaluation.gate_cache import IterationResult, results_key
from megatron_sota.evaluation.gate_file import read_gate
from megatron_sota.evaluation.gate_report import gate_checks, history_figure
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.task_spec import load_task
from megatron_sota.inference import checkpoint_model
from tests.evaluation.gate_runs import two_iteration_run, write_gate
from tests.tool_runner import run_tool


@pytest.fixture(scope="module")
def run_dir(checkpoint, tmp_path_factory) -> str:
    return two_iteration_run(checkpoint, tmp_path_factory.mktemp("gate_run"))


def _loads(monkeypatch) -> list:
    """The checkpoints the command loads, recorded as it loads them."""
    loaded, load = [], checkpoint_model.load_inference_model
    monkeypatch.setattr(checkpoint_model, "load_inference_model", lambda path, *a, **k: loaded.append(path) or load(path, *a, **k))
    return loaded


def test_a_bad_gate_file_lists_every_problem_with_file_line_and_key_before_a_model_loads(tmp_path, capsys, monkeypatch):
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        "descripton: typo\n"                                  # 1
        "tasks:\n"                                            # 2
        "  - task: arithmetic_mc\n"                           # 3
        "    thresholds: {exact_match: 0.5}\n"                # 4  a metric multiple choice does not report
        "  - task: arithmetc_mc\n"                            # 5
        "    thresholds: {acc: 0.5}\n"                        # 6
        "  - task: arithmetic_mc\n"                           # 7
        "    treshold: {acc: 0.5}\n"                          # 8
        "    num_fewshot: -1\n"                               # 9
        "  - task: python_docs_ppl\n"                         # 10 no threshold anywhere
    )
    loaded = _loads(monkeypatch)
    code, _, err = run_tool("release_gate", [str(gate), "--load", str(tmp_path / "no_checkpoint_here")], capsys)
    assert code == 1 and loaded == []
    expected = [
        f"{gate}:1: key 'descripton': unknown key", "(did you mean 'description'?)",
        f"{gate}:4: key 'tasks[0].thresholds': metric 'exact_match'",
        f"{gate}:5: key 'tasks[1].task'", "(did you mean 'arithmetic_mc'?)",
        f"{gate}:8: key 'tasks[2].treshold': unknown key", "(did you mean 'thresholds'?)",
        f"{gate}:9: key 'tasks[2].num_fewshot': expected an integer >= 0, found -1",
        f"{gate}:10: key 'tasks[3].thresholds': expected at least one threshold",
    ]
    positions = [err.find(text) for text in expected]
    assert -1 not in positions, err
    assert positions == sorted(positions)  # in line order
    assert "no_checkpoint_here" not in err  # the gate file is refused before the checkpoint is looked at


def test_the_safety_task_is_added_with_its_own_thresholds_unless_listed_or_turned_off(tmp_path):
    registered = load_task("safety_refusal")
    added = read_gate(write_gate(tmp_path / "on.yaml", {"acc": 0.1}, safety=True))
    assert [t.spec.name for t in added.tasks] == ["arithmetic_mc", "safety_refusal"]
    assert added.specs["safety_refusal"].thresholds == registered.thresholds and registered.thresholds
    assert "added safety_refusal" in added.safety
    off = read_gate(write_gate(tmp_path / "off.yaml", {"acc": 0.1}, safety=False))
    assert list(off.specs) == ["arithmetic_mc"]
    listed = tmp_path / "listed.yaml"
    listed.write_text("tasks:\n  - task: safety_refusal\n    limit: 2\n    thresholds: {over_refusal_rate: {max: 0.5}}\n")
    gate = read_gate(str(listed))
    assert list(gate.specs) == ["safety_refusal"] and gate.specs["safety_refusal"].thresholds == {"over_refusal_rate": {"max": 0.5}}
    assert gate.specs["safety_refusal"].limit == 2


def test_a_planted_failing_threshold_exits_3_naming_every_failure_in_the_log_and_the_reports(run_dir, tmp_path, capsys):
    gate = write_gate(tmp_path / "gate.yaml", {"acc": 0.99, "acc_norm": {"min": 0.99}, "acc_bytes": 0.0})
    out_dir = tmp_path / "out"
    code, out, err = run_tool("release_gate", [gate, "--load", run_dir, "--output-dir", str(out_dir), "--no-progress"], capsys)
    assert code == 3, err
    report = json.loads((out_dir / "release_gate.json").read_text())
    values = {r["metric"]: r["value"] for r in report["results"] if r["task"] == "arithmetic_mc"}
    assert values["acc"] < 0.99 and values["acc_norm"] < 0.99  # the tiny model answers at chance
    assert report["passed"] is False and report["iteration"] == 20 and report["checkpoint"].endswith("iter_0000020")
    assert len(report["failures"]) == 2
    for metric in ("acc", "acc_norm"):
        message = f"task arithmetic_mc: {metric} = {values[metric]:.4f} is below its threshold 0.9900"
        assert message in err and message in report["failures"] and message in (out_dir / "release_gate.md").read_text()
    assert {c["metric"]: c["passed"] for c in report["checks"]} == {"acc": False, "acc_norm": False, "acc_bytes": True}
    markdown = (out_dir / "release_gate.md").read_text()
    assert out == markdown and "**FAILED**: 2 of 3 checks" in markdown
    for row in report["results"]:  # every row in the table, with its value, stderr and verdict
        verdict = {"acc": "**FAIL**", "acc_norm": "**FAIL**", "acc_bytes": "pass"}[row["metric"]]
        assert f"| arithmetic_mc | {row['metric']} | {row['value']:.4f} ± {row['stderr']:.4f} |" in markdown
        assert any(line.startswith(f"| arithmetic_mc | {row['metric']} |") and line.endswith(f"| {verdict} |") for line in markdown.splitlines())
    assert (out_dir / "release_gate.png").read_bytes().startswith(b"\x89PNG")


def test_a_passing_gate_exits_0_and_a_second_run_evaluates_only_new_checkpoints(run_dir, tmp_path, capsys, monkeypatch):
    gate, out_dir = write_gate(tmp_path / "gate.yaml", {"acc": 0.0}), tmp_path / "out"
    argv = [gate, "--load", run_dir, "--output-dir", str(out_dir), "--no-progress"]
    loaded = _loads(monkeypatch)
    code, _, err = run_tool("release_gate", argv, capsys)
    assert code == 0, err
    first = json.loads((out_dir / "release_gate.json").read_text())
    assert first["passed"] and first["failures"] == [] and [h["iteration"] for h in first["history"]] == [20]
    assert [p.rsplit("/", 1)[1] for p in loaded] == ["iter_0000020"]

    code, _, err = run_tool("release_gate", [*argv, "--iterations", "all"], capsys)
    assert code == 0, err
    assert [p.rsplit("/", 1)[1] for p in loaded] == ["iter_0000020", "iter_0000010"]  # 20 was kept
    second = json.loads((out_dir / "release_gate.json").read_text())
    assert [(h["iteration"], h["cached"]) for h in second["history"]] == [(10, False), (20, True)]
    assert second["iteration"] == 20 and second["results"] == first["results"]

    # Thresholds are not part of what is kept: a stricter gate is judged on the kept rows, with no model loaded.
    write_gate(tmp_path / "gate.yaml", {"acc": 0.99})
    code, _, err = run_tool("release_gate", argv, capsys)
    assert code == 3 and "task arithmetic_mc: acc = " in err and len(loaded) == 2
    third = json.loads((out_dir / "release_gate.json").read_text())
    assert [(h["iteration"], h["cached"]) for h in third["history"]] == [(10, True), (20, True)]  # the plot keeps iteration 10


def test_kept_results_are_keyed_by_what_the_rows_depend_on_and_not_by_thresholds(tmp_path):
    gate = read_gate(write_gate(tmp_path / "gate.yaml", {"acc": 0.1}))
    stricter = read_gate(write_gate(tmp_path / "stricter.yaml", {"acc": 0.9}))
    fewer = read_gate(write_gate(tmp_path / "fewer.yaml", {"acc": 0.1}, limit=4))
    key = results_key(list(gate.specs.values()), None, 8, 1, "cpu")
    assert results_key(list(stricter.specs.values()), None, 8, 1, "cpu") == key
    assert results_key(list(fewer.specs.values()), None, 8, 1, "cpu") != key
    assert len({key, results_key(list(gate.specs.values()), 4, 8, 1, "cpu"), results_key(list(gate.specs.values()), None, 8, 2, "cpu")}) == 3
    data = tmp_path / "mc.jsonl"  # the same task file over edited data is another key
    data.write_text(json.dumps({"question": "1+1?", "choices": ["2", "3"], "answer": 0}) + "\n")
    task = tmp_path / "mc.yaml"
    task.write_text("type: multiple_choice\nfile: mc.jsonl\nthresholds: {acc: 0.5}\n")
    before = results_key([load_task(str(task))], None, 8, 1, "cpu")
    data.write_text(json.dumps({"question": "1+2?", "choices": ["2", "3"], "answer": 1}) + "\n")
    assert results_key([load_task(str(task))], None, 8, 1, "cpu") != before


def test_the_plot_draws_each_gated_metric_across_iterations_with_its_threshold(tmp_path):
    gate = read_gate(write_gate(tmp_path / "gate.yaml", {"acc": 0.3, "acc_norm": {"min": 0.2, "max": 0.9}}))
    history = [
        IterationResult(step, f"/run/iter_{step:07d}", (MetricRow("arithmetic_mc", "acc", acc, 0.05, 8), MetricRow("arithmetic_mc", "acc_norm", norm, 0.04, 8)), {}, cached=False)
        for step, acc, norm in ((10, 0.25, 0.5), (20, 0.375, 0.625), (40, 0.5, 0.75))
    ]
    checks = gate_checks(history[-1].rows, gate.specs)
    figure = history_figure(history, checks)
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert set(panels) == {"arithmetic_mc: acc", "arithmetic_mc: acc_norm"}
    for metric, column, bounds in (("acc", 1, [0.3]), ("acc_norm", 2, [0.2, 0.9])):
        axes = panels[f"arithmetic_mc: {metric}"]
        (errorbar,) = axes.containers
        series = errorbar.lines[0]
        thresholds = [line for line in axes.get_lines() if line.get_label().startswith("threshold")]
        assert list(series.get_xdata()) == [10, 20, 40]
        assert list(series.get_ydata()) == [[0.25, 0.375, 0.5], [0.5, 0.625, 0.75]][column - 1]
        assert [line.get_ydata()[0] for line in thresholds] == bounds


def test_iterations_select_the_latest_every_or_the_named_saved_checkpoints(run_dir):
    from megatron_sota.checkpointing.paths import iter_dir
    from megatron_sota.cli.release_gate import select_checkpoints
    from megatron_sota.errors import MegatronSotaError

    ten, twenty = iter_dir(run_dir, 10), iter_dir(run_dir, 20)
    assert select_checkpoints(run_dir, "latest") == (run_dir, [(20, twenty)])
    assert select_checkpoints(run_dir, "all") == (run_dir, [(10, ten), (20, twenty)])
    assert select_checkpoints(run_dir, "20,10") == (run_dir, [(10, ten), (20, twenty)])
    assert select_checkpoints(ten, "latest") == (run_dir, [(10, ten)])
    with pytest.raises(MegatronSotaError, match=r"found no iteration 30 \(saved: 10, 20\)"):
        select_checkpoints(run_dir, "10,30")
