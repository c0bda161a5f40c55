"""lm-evaluation-harness interop: lm-eval's model "megatron_sota" on the session checkpoint against lm-eval's own `hf`
model on its export (multiple choice, rolling log-likelihood), against transformers' greedy generate, at TP=1 through
lm-eval's Python API and at TP=2 through `torchrun -m megatron_sota.lm_eval`; and tools/evaluate.py's
multiple-choice metrics against lm-eval's on the same items."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.evaluation.lm_eval_tasks import GEN, MC, OFFLINE, PPL, REPO, loglikelihoods, our_task_yaml, write_tasks
from tests.tool_runner import run_tool

STOP = ["  \n"]
"""The generation task's stop string here: the tiny model writes indented blank lines, so a row ends on it."""
MAX_GEN_TOKS = 16
PROBES = ("\n", "\n#")
"""Continuations scored after each generation prompt, for is_greedy."""
"""The generation task's max_gen_toks (examples/lm_eval/megatron_sota_gen_sample.yaml)."""


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():
            patch.setenv(key, value)
        yield write_tasks(str(tmp_path_factory.mktemp("lm_eval_tasks")), until=STOP)


def _evaluate(model: str, model_args: str, tasks: list, include_path: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks, batch_size=8, log_samples=True,
                                   task_manager=TaskManager(include_path=include_path))


@pytest.fixture(scope="module")
def ours(checkpoint, offline) -> dict:
    """lm-eval's Python API on our model, by its registered name (TP=1)."""
    import megatron_sota.lm_eval

    from lm_eval.api.instance import Instance

    try:
        results = _evaluate("megatron_sota", f"load={checkpoint}", [MC, GEN, PPL], offline)
        # The task's items have no greedy continuation; a newline after a line of code often is one.
        probes = [(s["doc"]["prompt"], cont) for s in results["samples"][GEN] for cont in PROBES]
        model = megatron_sota.lm_eval.MegatronSotaLM._open
        results["probes"] = list(zip(probes, model.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(probes)])))
        return results
    finally:
        megatron_sota.lm_eval.close()  # later tests of this process start their own distributed sessions


@pytest.fixture(scope="module")
def hf(hf_export, offline) -> dict:
    """lm-eval's hf model on the export, with our end-of-document token before a rolling document (as ours)."""
    from transformers import AutoTokenizer

    eod = AutoTokenizer.from_pretrained(hf_export).eos_token_id
    return _evaluate("hf", f"pretrained={hf_export},dtype=float32,device=cpu,prefix_token_id={eod}", [MC, PPL], offline)


def _assert_same_scores(mine: list, theirs: list) -> None:
    assert len(mine) == len(theirs)
    for doc, (a, b) in enumerate(zip(mine, theirs)):
        assert [x[0] for x in a] == pytest.approx([x[0] for x in b], abs=1e-4), f"doc {doc}"
        assert [x[1] for x in a] == [x[1] for x in b], f"doc {doc}: is_greedy"


def test_multiple_choice_matches_the_hf_backend(ours, hf):
    mine, theirs = ours["results"][MC], hf["results"][MC]
    for metric in ("acc,none", "acc_norm,none", "acc_bytes,none"):
        assert mine[metric] == theirs[metric], metric
    # The items discriminate: dividing by the length changes the answer picked.
    assert theirs["acc,none"] != theirs["acc_norm,none"]
    _assert_same_scores(loglikelihoods(ours, MC), loglikelihoods(hf, MC))


def test_rolling_loglikelihood_matches_the_hf_backend(ours, hf):
    mine, theirs = loglikelihoods(ours, PPL), loglikelihoods(hf, PPL)
    assert [d[0] for d in mine] == pytest.approx([d[0] for d in theirs], abs=1e-4)
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"][PPL][metric] == pytest.approx(hf["results"][PPL][metric], rel=1e-5), metric


def test_generate_until_is_transformers_greedy_cut_at_the_stop_string(ours, hf_export):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_export)
    model = AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32)
    samples = sorted(ours["samples"][GEN], key=lambda s: s["doc_id"])
    stopped = 0
    for sample in samples:
        ids = tokenizer(sample["doc"]["prompt"], return_tensors="pt").input_ids
        # Plain greedy: the export's generation_config.json samples, with a repetition penalty.
        out = model.generate(ids, do_sample=False, max_new_tokens=MAX_GEN_TOKS, repetition_penalty=1.0, temperature=None,
                             top_k=None, top_p=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        cut = text.find(STOP[0])
        stopped += cut >= 0
        assert sample["resps"][0][0] == (text[:cut] if cut >= 0 else text), sample["doc"]["prompt"]
    assert stopped, "no row ended at the stop string: the check would not see it ignored"


def test_is_greedy_is_transformers_argmax(ours, hf_export):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_export)
    model = AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32)
    flags = []
    for (context, continuation), (_, is_greedy) in ours["probes"]:
        stripped = context.rstrip()  # lm-eval's split: the context's trailing whitespace joins the continuation
        context_ids = tokenizer(stripped).input_ids
        whole = tokenizer(stripped + context[len(stripped):] + continuation).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([whole[:-1]])).logits[0]
        expected = logits[len(context_ids) - 1:].argmax(-1).tolist() == whole[len(context_ids):]
        assert is_greedy == expected, (context, continuation)
        flags.append(is_greedy)
    assert True in flags and False in flags, "the probes must hold greedy and non-greedy continuations"


def test_our_multiple_choice_metrics_are_lm_evals(hf, checkpoint, offline, tmp_path, capsys):
    report = str(tmp_path / "report.json")
    code, _, err = run_tool("evaluate", ["--load", checkpoint, "--task", our_task_yaml(str(tmp_path)), "--output", report,
                                         "--no-progress"], capsys)
    assert code == 0, err
    with open(report, encoding="utf-8") as handle:
        rows = {row["metric"]: row for row in json.load(handle)["results"]}
    theirs = hf["results"][MC]
    for metric in ("acc", "acc_norm", "acc_bytes"):
        assert rows[metric]["value"] == pytest.approx(theirs[f"{metric},none"], abs=1e-12), metric
        assert rows[metric]["stderr"] == pytest.approx(theirs[f"{metric}_stderr,none"], rel=1e-9), metric


@pytest.mark.slow
def test_tp2_under_torchrun_matches_the_hf_backend(hf, checkpoint, offline, tmp_path):
    from megatron_sota.runtime.launch_env import free_port

    out = tmp_path / "results"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               "-m", "megatron_sota.lm_eval", "--model", "megatron_sota", "--model_args", f"load={checkpoint}", "--device", "cpu",
               "--tasks", MC, "--include_path", offline, "--batch_size", "8", "--output_path", str(out), "--log_samples"]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = glob.glob(str(out / "**" / "results_*.json"), recursive=True)  # one rank wrote results
    (samples_file,) = glob.glob(str(out / "**" / f"samples_{MC}_*.jsonl"), recursive=True)
    with open(results_file, encoding="utf-8") as handle:
        mine = json.load(handle)
    assert mine["config"]["tensor_parallel"] == 2
    for metric in ("acc,none", "acc_norm,none", "acc_bytes,none"):
        assert mine["results"][MC][metric] == hf["results"][MC][metric], metric
    with open(samples_file, encoding="utf-8") as handle:
        samples = [json.loads(line) for line in handle]
    _assert_same_scores(loglikelihoods({"samples": {MC: samples}}, MC), loglikelihoods(hf, MC))
    assert result.stdout.count("|acc_norm") == 1, "only rank 0 prints the table"


def test_chat_formatted_requests_use_the_checkpoints_template(checkpoint, offline):
    """lm-eval's --apply_chat_template: the prompt is the shipped ChatML conversation (the tiny model was never
    post-trained), and its end-of-turn text, which this tokenizer spells in pieces, joins every request's stop strings."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import megatron_sota.lm_eval

    try:
        results = lm_eval.simple_evaluate(model="megatron_sota", model_args=f"load={checkpoint}", tasks=[GEN], log_samples=True,
                                          apply_chat_template=True, task_manager=TaskManager(include_path=offline))
        _, until, _ = megatron_sota.lm_eval.MegatronSotaLM._open._generation_settings({"until": ["stop"]})
    finally:
        megatron_sota.lm_eval.close()
    assert until == ["stop", "<|im_end|>"]
    for sample in results["samples"][GEN]:
        (prompt, _), = sample["arguments"]
        assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n"), prompt


def test_context_continuation_split_is_lm_evals(hf_export):
    """runner.encode_pair against lm-eval's own TemplateLM._encode_pair with the same tokenizer: trailing spaces,
    newlines and tabs of the context move to the continuation."""
    from lm_eval.api.model import TemplateLM

    from megatron_sota.data.hf_tokenizer import HuggingFaceTokenizer
    from megatron_sota.evaluation.runner import encode_pair

    tokenizer = HuggingFaceTokenizer(hf_export)

    class Reference(TemplateLM):
        backend = "causal"
        eot_token_id = tokenizer.eod

        def tok_encode(self, string, **kwargs):
            return tokenizer.tokenize(string)

        def _loglikelihood_tokens(self, requests, **kwargs):
            raise NotImplementedError

        loglikelihood_rolling = generate_until = _loglikelihood_tokens

    reference = Reference()
    for context, continuation in [("Question: 2 + 2?\nAnswer:", " 4"), ("def f():\n", "    return 1"),
                                  ("x = [1, 2]\n\t", "y"), ("import os  ", "sys"), ("if a:\n    \n", "pass")]:
        assert encode_pair(tokenizer, context, continuation) == reference._encode_pair(context, continuation), (context, continuation)
