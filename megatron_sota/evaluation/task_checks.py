"""Checks in-loop evaluation's tasks before any process group: each resolves, its data reads, its prompts build,
a passkey task's lengths fit the model's positions.

The trainer folds these problems into the config's one error message; it must not load a model.
"""

from __future__ import annotations

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.passkey import check_lengths_fit
from megatron_sota.evaluation.runner import check_task_data
from megatron_sota.evaluation.task_spec import load_task


def task_problems(cfg: JobConfig) -> list[str]:
    """Every problem with `eval.tasks` that reading the task files shows (none when in-loop evaluation is off)."""
    e = cfg.eval
    if not e.tasks or e.interval == 0:
        return []
    problems = []
    text_tokenizer = cfg.tokenizer.type not in (None, "NullTokenizer")
    for name in e.tasks:
        try:
            spec = load_task(name)
            check_task_data(spec)
            if spec.type == "passkey":
                check_lengths_fit(spec, cfg.model.max_position_embeddings)
        except MegatronSotaError as err:
            problems.append(f"eval.tasks: {err}")
            continue
        if not text_tokenizer and not (spec.type == "perplexity" and not spec.path.endswith(".jsonl")):
            problems.append(f"eval.tasks: task {name} ({spec.type}) reads text, but the run has no text tokenizer (tokenizer.type={cfg.tokenizer.type})")
    return problems
