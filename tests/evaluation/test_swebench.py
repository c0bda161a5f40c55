"""SWE-bench predictions: the prompt, the patch cut out of a reply, and the CLI's predictions file (format, ids,
refusals, atomicity) from the session checkpoint. A tiny model writes garbage patches; content is not checked."""

from __future__ import annotations

import json
import os

import pytest

from megatron_sota.config.files import conf_dir
from megatron_sota.evaluation.benchmark_files import SWEBenchInstance, read_swebench_instances
from megatron_sota.evaluation.swebench import PREDICTION_KEYS, extract_patch, instance_prompt, prediction

SAMPLE = conf_dir("eval", "tasks", "data", "swebench_sample.jsonl")
DIFF = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
SECOND = "diff --git a/n.py b/n.py\n--- a/n.py\n+++ b/n.py\n@@ -1 +1 @@\n-y\n+z\n"


PATCH_SHAPES = [
    (f"Here is the fix:\n```diff\n{DIFF}```\nThat should do it.", DIFF),
    (f"```patch\n{DIFF}```", DIFF),
    (f"```diff\n{DIFF}```\nand\n```diff\n{SECOND}```\n", DIFF + SECOND),  # one block per file
    (f"```python\nprint(1)\n```\n```diff\n{DIFF}```", DIFF),  # other languages' blocks are not patches
    (f"```diff\n{DIFF}", DIFF),  # the budget ran out before the closing fence
    (f"```diff\n{DIFF.rstrip()}", DIFF),  # ... in the middle of a line's end: the newline is added
    (f"The change:\n{DIFF}\n", DIFF),  # no fence: from "diff --git" to the end
    (f"Sure.\n```\n{DIFF}```\nDone.", DIFF),  # an unlabelled fence ends the bare patch
    ("--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n", "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"),
    ("I could not find the bug.", ""),
    ("```diff\n\n```", ""),
    ("", ""),
]
SHAPE_NAMES = ["fenced-diff", "fenced-patch", "two-blocks", "python-block-skipped", "unclosed-fence", "unclosed-mid-line",
               "bare-diff-git", "bare-in-plain-fence", "bare-minus-a", "no-patch", "empty-block", "empty-reply"]


@pytest.mark.parametrize("reply,patch", PATCH_SHAPES, ids=SHAPE_NAMES)
def test_extract_patch(reply, patch):
    assert extract_patch(reply) == patch


def test_prompt_is_the_ready_text_when_given_else_issue_hints_and_request():
    with_text, = [i for i in read_swebench_instances(SAMPLE) if i.text is not None]
    assert instance_prompt(with_text) == with_text.text
    bare = SWEBenchInstance("o__r-1", "o/r", "a" * 40, "The parser drops the last line.", 1, hints_text="See reader.py")
    prompt = instance_prompt(bare)
    assert "The parser drops the last line." in prompt and "See reader.py" in prompt and "o/r" in prompt
    assert "unified diff" in prompt
    no_hints = instance_prompt(SWEBenchInstance("o__r-1", "o/r", "a" * 40, "The parser drops the last line.", 1))
    assert "Comments on the issue" not in no_hints and "Comments on the issue" in prompt


def test_prediction_has_exactly_the_harness_fields():
    assert prediction("o__r-1", "m", DIFF) == {"instance_id": "o__r-1", "model_name_or_path": "m", "model_patch": DIFF}


def _read_predictions(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_cli_writes_one_prediction_per_instance_and_refuses_bad_inputs(checkpoint, tmp_path, capsys):
    from megatron_sota.cli.swebench_predictions import main

    ids = [i.instance_id for i in read_swebench_instances(SAMPLE)]
    output = str(tmp_path / "preds.jsonl")
    common = ["--load", checkpoint, "--instances", SAMPLE, "--limit", "2", "--max-new-tokens", "4", "--no-progress"]
    assert main([*common, "--output", output]) == 0
    predictions = _read_predictions(output)
    assert [p["instance_id"] for p in predictions] == ids[:2]
    assert all(tuple(p) == PREDICTION_KEYS and isinstance(p["model_patch"], str) for p in predictions)
    assert {p["model_name_or_path"] for p in predictions} == {os.path.basename(os.path.normpath(checkpoint))}
    assert sorted(os.listdir(tmp_path)) == ["preds.jsonl"]  # no temporary file left beside it

    before = open(output, encoding="utf-8").read()
    assert main([*common, "--output", output]) == 1  # an existing output is refused...
    assert open(output, encoding="utf-8").read() == before
    chat = [*common, "--output", output, "--overwrite", "--chat", "--model-name", "tiny-chat", "--batch-size", "1"]
    assert main(chat) == 0  # ...unless --overwrite; --chat on a checkpoint never post-trained still renders
    assert "the end of a turn is matched as text instead" in capsys.readouterr().err  # it has no end-of-turn token
    predictions = _read_predictions(output)
    assert [p["instance_id"] for p in predictions] == ids[:2]
    assert {p["model_name_or_path"] for p in predictions} == {"tiny-chat"}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instance_id": "x", "repo": "o/r", "base_commit": "nope", "problem_statement": "p"}) + "\n")
    fresh = str(tmp_path / "never.jsonl")
    assert main(["--load", checkpoint, "--instances", str(bad), "--output", fresh]) == 1
    assert not os.path.exists(fresh)
