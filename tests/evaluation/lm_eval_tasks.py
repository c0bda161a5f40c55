"""The lm-eval sample tasks of examples/lm_eval/ copied for a test: data_files made absolute (lm-eval reads them from
the working directory), generation kwargs overridden where a test needs other stop strings."""

from __future__ import annotations

import os
from typing import Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples", "lm_eval")
MC, GEN, PPL = "megatron_sota_mc_sample", "megatron_sota_gen_sample", "megatron_sota_ppl_sample"

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def write_tasks(directory: str, until: Optional[list] = None) -> str:
    """`directory` holding the three task YAMLs (an lm-eval include path); `until`: the generation task's stop strings."""
    os.makedirs(directory, exist_ok=True)
    for name in (MC, GEN, PPL):
        with open(os.path.join(EXAMPLES, f"{name}.yaml"), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        files = config["dataset_kwargs"]["data_files"]
        files["test"] = os.path.join(REPO, files["test"])
        if until is not None and "generation_kwargs" in config:
            config["generation_kwargs"]["until"] = until
        with open(os.path.join(directory, f"{name}.yaml"), "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle, allow_unicode=True)
    return directory


def loglikelihoods(results: dict, task: str) -> list:
    """Per document, per request: (log-likelihood, is_greedy) for loglikelihood tasks, the sum for rolling ones.
    `results`: simple_evaluate's, or {"samples": {task: the lines of lm-eval's samples file}} (which writes strings)."""
    def value(response):
        if isinstance(response, (list, tuple)):
            return float(response[0]), response[1] in (True, "True")
        return float(response)

    return [[value(r[0]) for r in sample["resps"]] for sample in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def our_task_yaml(directory: str) -> str:
    """The multiple-choice sample as a task of tools/evaluate.py: the same context and " {choice}" continuations."""
    path = os.path.join(directory, "mc_sample_ours.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({
            "description": "examples/lm_eval/mc_sample.jsonl as our own task",
            "type": "multiple_choice",
            "file": os.path.join(EXAMPLES, "mc_sample.jsonl"),
            "num_fewshot": 0,
            "template": "Question: {question}\nAnswer:",
            "choice_template": " {choice}",
        }, handle)
    return path
