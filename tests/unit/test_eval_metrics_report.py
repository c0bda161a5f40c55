"""Evaluation metrics against hand computations, thresholds, the table and the atomically written report."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from megatron_sota import atomic_files
from megatron_sota.evaluation.metrics import (
    mean_stderr,
    multiple_choice_scores,
    perplexity_metrics,
)
from megatron_sota.evaluation.report import (
    MetricRow,
    check_thresholds,
    format_table,
    write_report,
)
from megatron_sota.evaluation.task_spec import TaskSpec


def test_mean_stderr_is_sample_std_over_sqrt_n():
    mean, stderr = mean_stderr([1.0, 0.0, 1.0, 1.0])
    # deviations 0.25, -0.75, 0.25, 0.25: sum of squares 0.75, / (n - 1) = 0.25, std 0.5, / sqrt(4)
    assert mean == 0.75 and stderr == pytest.approx(0.25)
    assert mean_stderr([0.3]) == (0.3, None)
    assert mean_stderr([2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        mean_stderr([])


def test_multiple_choice_scores_by_hand():
    scores = multiple_choice_scores(
        loglikelihoods=[[-2.0, -3.0], [-1.0, -1.0, -5.0], [-4.0, -1.0], [-6.0, -4.5], [-4.0, -3.0]],
        choices=[["ab", "abcdef"], ["a", "b", "c"], ["abcd", "efgh"], ["abcd", "abc"], ["日本", "abc"]],
        gold=[1, 0, 0, 0, 0],
    )
    # item 0: acc picks choice 0 (-2 > -3); per character -1.0 vs -0.5 picks choice 1, the gold one
    # item 1: a tie goes to the first choice, as numpy.argmax does
    # item 2: all pick choice 1; item 3: per character -1.5 vs -1.5 ties, so acc_norm also picks the first
    # item 4: per character -2.0 vs -1.0 picks "abc"; per byte -4/6 vs -1.0 picks "日本" (3 bytes a character)
    assert scores == {
        "acc": [0.0, 1.0, 0.0, 0.0, 0.0],
        "acc_norm": [1.0, 1.0, 0.0, 1.0, 0.0],
        "acc_bytes": [1.0, 1.0, 0.0, 1.0, 1.0],
    }


def test_multiple_choice_scores_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="log-likelihoods but 1 choices"):
        multiple_choice_scores([[-1.0, -2.0]], [["a"]], [0])
    with pytest.raises(ValueError, match="gold index 2"):
        multiple_choice_scores([[-1.0, -2.0]], [["a", "b"]], [2])
    with pytest.raises(ValueError, match="an empty choice"):
        multiple_choice_scores([[-1.0, -2.0]], [["", "b"]], [0])


def test_the_length_norm_leaves_out_the_delimiter_as_lm_eval_does():
    from megatron_sota.evaluation.prompting import without_delimiter
    from megatron_sota.evaluation.task_spec import TaskSpec

    spec = TaskSpec("t", "multiple_choice", "/x.jsonl")
    assert without_delimiter(spec, " Paris") == "Paris"
    assert without_delimiter(spec, "  two spaces") == " two spaces"  # only the template's own delimiter goes
    newline = TaskSpec("t", "multiple_choice", "/x.jsonl", choice_template="\n{letter}")
    assert without_delimiter(newline, "\nB") == "B"
    assert without_delimiter(TaskSpec("t", "multiple_choice", "/x.jsonl", choice_template="{choice}"), " x") == " x"


def test_perplexity_metrics_by_hand():
    result = perplexity_metrics([-10.0, -20.0, -6.0], [5, 10, 2], [20, 30, 10])
    nll_per_token = 36 / 17
    perplexity = math.exp(nll_per_token)
    # delta method: residuals d_i = nll_i - R * tokens_i, SE(R) = sqrt(sum d^2 / (n (n - 1))) / mean(tokens)
    d = [10 - nll_per_token * 5, 20 - nll_per_token * 10, 6 - nll_per_token * 2]
    se_token = math.sqrt(sum(x * x for x in d) / 6) / (17 / 3)
    nll_per_byte = 36 / 60
    d = [10 - nll_per_byte * 20, 20 - nll_per_byte * 30, 6 - nll_per_byte * 10]
    se_byte = math.sqrt(sum(x * x for x in d) / 6) / (60 / 3)
    assert result["perplexity"] == pytest.approx((perplexity, perplexity * se_token))
    assert result["bits_per_byte"] == pytest.approx((36 / (60 * math.log(2)), se_byte / math.log(2)))
    # pooled over tokens, not a mean of per-document perplexities
    assert result["perplexity"][0] != pytest.approx(sum(math.exp(-ll / t) for ll, t in [(-10, 5), (-20, 10), (-6, 2)]) / 3)


def test_perplexity_stderr_edge_cases():
    one = perplexity_metrics([-4.0], [2], [8])
    assert one["perplexity"] == (pytest.approx(math.exp(2.0)), None)
    assert one["bits_per_byte"] == (pytest.approx(0.5 / math.log(2)), None)
    same_rate = perplexity_metrics([-2.0, -4.0, -6.0], [1, 2, 3], [4, 8, 12])  # every document at the same rate
    assert same_rate["perplexity"][1] == pytest.approx(0.0) and same_rate["bits_per_byte"][1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="negative"):
        perplexity_metrics([-1.0, -1.0], [2, -1], [3, 3])
    with pytest.raises(ValueError, match="no scored tokens"):
        perplexity_metrics([0.0], [0], [3])
    # a document with no scored tokens adds nothing, not even to n; without byte counts no bits_per_byte
    with_empty = perplexity_metrics([-10.0, 0.0, -20.0, -6.0], [5, 0, 10, 2], [20, 0, 30, 10])
    assert with_empty == perplexity_metrics([-10.0, -20.0, -6.0], [5, 10, 2], [20, 30, 10])
    tokens_only = perplexity_metrics([-10.0, -20.0, -6.0], [5, 10, 2], None)
    assert tokens_only == {"perplexity": with_empty["perplexity"]}


def spec(name, thresholds, type_="multiple_choice"):
    return TaskSpec(name, type_, f"/x/{name}.jsonl", thresholds=thresholds)


def test_thresholds_minimum_maximum_and_missing_metric():
    rows = [
        MetricRow("safety_refusals", "acc", 0.42, 0.05, 100),
        MetricRow("safety_refusals", "acc_norm", 0.9, 0.02, 100),
        MetricRow("wiki", "perplexity", 12.5, 0.3, 30),
        MetricRow("wiki", "bits_per_byte", 0.8, 0.01, 30),
        MetricRow("math", "exact_match", float("nan"), None, 0),
    ]
    specs = {
        "safety_refusals": spec("safety_refusals", {"acc": 0.9, "acc_norm": 0.9}),
        "wiki": spec("wiki", {"perplexity": 10.0, "bits_per_byte": 0.8}, "perplexity"),
        "math": spec("math", {"exact_match": 0.1}, "exact_match"),
        "absent": spec("absent", {"acc": 0.5}),
    }
    assert check_thresholds(rows, specs) == [
        "task safety_refusals: acc = 0.4200 is below its threshold 0.9000",
        "task wiki: perplexity = 12.5000 is above its threshold 10.0000",
        "task math: exact_match = nan is below its threshold 0.1000",
        "task absent: has a threshold on acc but reported no acc (reported: nothing)",
    ]
    # bounds are inclusive: acc_norm 0.9 >= 0.9 and bits_per_byte 0.8 <= 0.8 pass
    rows_without_acc_norm = [r for r in rows if r.metric != "acc_norm"]
    assert "task safety_refusals: has a threshold on acc_norm but reported no acc_norm (reported: acc)" in check_thresholds(
        rows_without_acc_norm, specs
    )
    assert check_thresholds(rows, {"safety_refusals": spec("safety_refusals", {})}) == []


def test_format_table_aligns_columns():
    rows = [
        MetricRow("arithmetic_mc", "acc", 0.5, 0.0729, 48),
        MetricRow("python_docs_ppl", "perplexity", 123.456789, None, 32),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["task", "metric", "value", "±", "stderr", "n"]
    assert lines[2].split() == ["arithmetic_mc", "acc", "0.5000", "±", "0.0729", "48"]
    assert lines[3].split() == ["python_docs_ppl", "perplexity", "123.4568", "32"]
    # every column starts at the same offset on every line; numbers are right-aligned
    assert lines[2].index("acc") == lines[3].index("perplexity") == lines[0].index("metric")
    assert lines[2].index("0.5000") + len("0.5000") == lines[3].index("123.4568") + len("123.4568")
    assert lines[2].endswith("48") and lines[3].endswith("32") and len(lines[2]) == len(lines[3])


def test_write_report_json(tmp_path):
    path = str(tmp_path / "out" / "eval.json")
    rows = [MetricRow("a", "acc", 0.5, 0.1, 10), MetricRow("p", "perplexity", float("inf"), None, 3)]
    write_report(path, rows, ["task a: acc = 0.5000 is below its threshold 0.9000"], {"checkpoint": "/ckpt", "iteration": 7})
    report = json.loads(Path(path).read_text())
    assert report == {
        "results": [
            {"task": "a", "metric": "acc", "value": 0.5, "stderr": 0.1, "n": 10},
            {"task": "p", "metric": "perplexity", "value": None, "stderr": None, "n": 3},
        ],
        "failures": ["task a: acc = 0.5000 is below its threshold 0.9000"],
        "passed": False,
        "checkpoint": "/ckpt",
        "iteration": 7,
    }
    assert os.listdir(tmp_path / "out") == ["eval.json"]
    write_report(path, rows[:1], [], {})
    assert json.loads(Path(path).read_text())["passed"] is True
    with pytest.raises(ValueError, match="passed"):
        write_report(path, rows, [], {"passed": True})


def test_write_report_is_never_half_written(tmp_path, monkeypatch):
    path = str(tmp_path / "eval.json")
    write_report(path, [MetricRow("a", "acc", 0.5, None, 1)], [], {"run": 1})
    before = Path(path).read_text()

    def crash(src, dst):
        assert Path(src).read_text().endswith("}\n")  # the whole report is in the temporary file before the rename
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_files.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_report(path, [MetricRow("a", "acc", 0.9, None, 1)], [], {"run": 2})
    assert Path(path).read_text() == before
    assert os.listdir(tmp_path) == ["eval.json"]  # no temporary file left behind
    with pytest.raises(TypeError):  # an unserialisable meta fails before any file is touched
        write_report(path, [], [], {"run": object()})
    assert Path(path).read_text() == before and os.listdir(tmp_path) == ["eval.json"]
