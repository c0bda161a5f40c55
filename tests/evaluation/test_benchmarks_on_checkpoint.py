"""The benchmark tasks end to end on a trained checkpoint through tools/evaluate.py: every format, sampled answers,
code run in the sandbox, and --chat (the tiny model answers at chance: what is checked is that every task runs and
reports the metrics it promises, consistently); and sampled answers that depend on their seed only, not their batch."""

from __future__ import annotations

import json
import os

import pytest

from megatron_sota.config.files import conf_dir
from megatron_sota.runtime.local_ranks import run_distributed
from tests.evaluation.sampling_probe import sampled_answers
from tests.tool_runner import run_tool

DATA = conf_dir("eval", "tasks", "data")


def _task(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def _metrics(report: str) -> dict:
    with open(report) as handle:
        return {(r["task"], r["metric"]): r for r in json.load(handle)["results"]}


@pytest.mark.slow
def test_every_benchmark_format_runs_on_a_checkpoint(checkpoint, tmp_path, capsys):
    aime = _task(tmp_path, "aime", (
        f"type: exact_match\nformat: aime\nfile: {os.path.join(DATA, 'aime_sample.jsonl')}\ntemplate: \"{{question}}\\nAnswer:\"\n"
        "num_samples: 3\npass_at: [1, 3]\ntemperature: 1.0\nmax_new_tokens: 6\nstop: []\nlimit: 3\n"
    ))
    code = _task(tmp_path, "code", f"type: code\nfile: {os.path.join(DATA, 'humaneval_sample.jsonl')}\nmax_new_tokens: 8\nlimit: 2\n")
    cot = _task(tmp_path, "cot", (
        f"type: exact_match\nformat: gpqa\nfile: {os.path.join(DATA, 'gpqa_sample.jsonl')}\n"
        "template: \"{question}\\n{choices_lettered}\"\nmax_new_tokens: 6\nlimit: 2\n"
    ))
    report = str(tmp_path / "report.json")
    argv = ["--load", checkpoint, "--task", "mmlu_sample_5shot", "--task", "gpqa_sample", "--task", aime, "--task", code,
            "--task", cot, "--chat", "--limit", "6", "--output", report, "--no-progress"]
    status, out, err = run_tool("evaluate", argv, capsys)
    assert status == 0, err
    rows = _metrics(report)
    mmlu = {m: r for (t, m), r in rows.items() if t == "mmlu_sample_5shot"}
    assert set(mmlu) == {"acc", "acc_norm", "acc_bytes", "acc_macro", "acc/astronomy"}  # the first 6 are astronomy
    assert mmlu["acc"]["value"] == mmlu["acc_macro"]["value"] == mmlu["acc/astronomy"]["value"]  # one subject
    assert {m for t, m in rows if t == "gpqa_sample"} == {"acc", "acc_norm", "acc_bytes"}
    assert {m for t, m in rows if t == "aime"} == {"exact_match", "pass@1", "pass@3"}
    assert rows[("aime", "pass@1")]["value"] <= rows[("aime", "pass@3")]["value"] and rows[("aime", "pass@1")]["n"] == 3
    assert {m for t, m in rows if t == "code"} == {"pass@1"} and rows[("code", "pass@1")]["n"] == 2
    assert {m for t, m in rows if t == "cot"} == {"exact_match"}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows.values())
    assert "sandbox layers active:" in err



@pytest.mark.slow
def test_a_sampled_answer_depends_on_its_seed_not_on_its_batch(checkpoint):
    answers = run_distributed(sampled_answers, 1, checkpoint)[0]
    assert answers["together"] == answers["alone"] == answers["reversed"]
    assert answers["other_seeds"] != answers["together"]  # the seeds do reach the sampler
    assert len({tuple(a) for a in answers["together"]}) > 1
