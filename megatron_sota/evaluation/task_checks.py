"""Checks in-loop evaluation's tasks before any process group: each resolves, its data reads, its prompts build,
a passkey task's lengths fit the model's positions, no task needs sampling or a chat template (the loop decodes greedily,
without one), and a gate (eval.stop_on_threshold) has thresholds to check.

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
        off = "eval.tasks is empty" if not e.tasks else "eval.interval=0"
        return [f"eval.stop_on_threshold=true needs in-loop evaluation, but {off}"] if e.stop_on_threshold else []
    problems, gated = [], False
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
        if spec.temperature > 0:
            problems.append(f"eval.tasks: task {name} samples its answers (temperature {spec.temperature}), which in-loop evaluation cannot do (it decodes greedily): run it with tools/evaluate.py")
        if spec.chat:
            problems.append(f"eval.tasks: task {name} is chat-formatted (chat: true), which in-loop evaluation does not do: run it with tools/evaluate.py")
        gated = gated or bool(spec.thresholds)
        if not text_tokenizer and not (spec.type == "perplexity" and not spec.path.endswith(".jsonl")):
            problems.append(f"eval.tasks: task {name} ({spec.type}) reads text, but the run has no text tokenizer (tokenizer.type={cfg.tokenizer.type})")
    if e.stop_on_threshold and not gated and not problems:
        problems.append(f"eval.stop_on_threshold=true, but none of eval.tasks ({', '.join(e.tasks)}) has thresholds: the gate could never stop the run")
    return problems
