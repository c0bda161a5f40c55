"""Critique and revision (the supervised stage of constitutional AI): response, then per principle a critique and a
rewrite, written as SFT conversations whose assistant message is the last revision.

It drives a reply function (respond.Replier.reply or a test's); it must not load models or write files.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, List, Sequence

from megatron_sota.posttrain.cai.constitution import Principle, sample_principles
from megatron_sota.posttrain.cai.conversations import assistant, critique_turns, revision_turns, user
from megatron_sota.posttrain.cai.inputs import PromptItem

log = logging.getLogger(__name__)

Reply = Callable[[Sequence[list], Sequence[str], str], List[str]]
"""(conversations, "path:line" of each, what they are) -> the assistant's next message of each."""


def critique_and_revise(items: Sequence[PromptItem], principles: Sequence[Principle], revisions: int, seed: int, reply: Reply) -> List[dict]:
    """One SFT record per prompt: {"messages": [user, assistant = final revision], "cai": the steps}.

    Each prompt gets `revisions` principles drawn by a generator seeded with `seed`; every stage is generated for
    all prompts together (batched). A revision that comes back empty keeps the response before it; a prompt
    whose response stays empty is left out (SFT refuses empty assistant messages), with a warning.
    """
    rng = random.Random(seed)
    chosen = [sample_principles(principles, revisions, rng) for _ in items]
    wheres = [item.where for item in items]
    current = reply([[user(item.prompt)] for item in items], wheres, "response")
    steps = [{"source": item.where, "response": text, "principles": [], "critiques": [], "revisions": []} for item, text in zip(items, current)]
    for round_ in range(revisions):
        rules = [drawn[round_] for drawn in chosen]
        critiques = reply([critique_turns(i.prompt, r, p) for i, r, p in zip(items, current, rules)], wheres, f"critique {round_ + 1}")
        revised = reply(
            [revision_turns(i.prompt, r, p, c) for i, r, p, c in zip(items, current, rules, critiques)], wheres, f"revision {round_ + 1}"
        )
        for step, rule, critique, text in zip(steps, rules, critiques, revised):
            step["principles"].append(rule.name)
            step["critiques"].append(critique)
            step["revisions"].append(text)
        current = [text or before for text, before in zip(revised, current)]
    records = [
        {"messages": [user(item.prompt), assistant(final)], "cai": step}
        for item, final, step in zip(items, current, steps) if final
    ]
    if len(records) < len(items):
        log.warning("%d of %d prompts left out: the model's response and every revision were empty", len(items) - len(records), len(items))
    return records
