"""AI preference labels (the RL stage of constitutional AI): a judge model answers each sampled principle's question
about two responses with "(A)" or "(B)", in both orders, and the averaged probability decides the preference pair.

The log-probabilities come from a scoring function (the evaluation harness's loglikelihoods in tools/cai.py, a fake
in tests); it must not load models or write files.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Callable, List, Sequence, Tuple

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.cai.constitution import Principle, sample_principles
from megatron_sota.posttrain.cai.conversations import ANSWER_PREFIX, OPTIONS, judge_question, user
from megatron_sota.posttrain.cai.inputs import Comparison

log = logging.getLogger(__name__)

Request = Tuple[List[int], List[int]]
Score = Callable[[Sequence[Request]], torch.Tensor]
"""(context ids, continuation ids) pairs -> [n, 1] summed log-probabilities of the continuations."""


def option_probability(logp_a: float, logp_b: float) -> float:
    """P(" (A)") among the two options: the log-probabilities normalised over {(A), (B)} only."""
    return 1.0 / (1.0 + math.exp(logp_b - logp_a))


def preference_for_first(shown_ab: Tuple[float, float], shown_ba: Tuple[float, float]) -> float:
    """P(response_a is better) from the judge's (logp " (A)", logp " (B)") with response_a shown as (A), then with the
    two swapped (response_a as (B)): the mean of both orders, so a judge that favours a letter cancels out."""
    return 0.5 * (option_probability(*shown_ab) + (1.0 - option_probability(*shown_ba)))


def judge_requests(tokenizer, template, comparison: Comparison, principle: Principle, max_length: int) -> List[Request]:
    """Four scoring requests: (A) and (B) after the question with response_a first, then with response_b first."""
    from megatron_sota.evaluation.runner import encode_pair

    requests = []
    for first, second in ((comparison.response_a, comparison.response_b), (comparison.response_b, comparison.response_a)):
        question = judge_question(comparison.prompt, principle.comparison_question, first, second)
        context = template.render([user(question)], add_generation_prompt=True, where=comparison.where) + ANSWER_PREFIX
        for option in OPTIONS:
            context_ids, continuation = encode_pair(tokenizer, context, option)
            if len(context_ids) + len(continuation) > max_length + 1:
                raise MegatronSotaError(
                    f"{comparison.where}: principle {principle.name}: expected the judge's prompt to fit in the judge's "
                    f"context ({max_length} tokens), found {len(context_ids) + len(continuation) - 1}"
                )
            requests.append((context_ids, continuation))
    return requests


def judge(comparisons: Sequence[Comparison], principles: Sequence[Principle], per_comparison: int, seed: int,
          tokenizer, template, max_length: int, score: Score) -> List[Tuple[float, List[str]]]:
    """(P(response_a is better) averaged over the principles drawn for it, their names) per comparison.

    Every request is built (and every over-long prompt reported, all at once) before anything is scored."""
    rng = random.Random(seed)
    drawn = [sample_principles(principles, per_comparison, rng) for _ in comparisons]
    requests: List[Request] = []
    problems: List[str] = []
    for comparison, rules in zip(comparisons, drawn):
        for rule in rules:
            try:
                requests.extend(judge_requests(tokenizer, template, comparison, rule, max_length))
            except MegatronSotaError as err:
                problems.append(str(err))
    if problems:
        raise MegatronSotaError(f"{len(problems)} judge prompt(s) do not fit:\n  " + "\n  ".join(problems))
    logps = score(requests)[:, 0].tolist()
    out, at = [], 0
    for rules in drawn:
        votes = []
        for _ in rules:
            a_first, b_first = (logps[at], logps[at + 1]), (logps[at + 2], logps[at + 3])
            votes.append(preference_for_first(a_first, b_first))
            at += 4
        out.append((sum(votes) / len(votes), [rule.name for rule in rules]))
    return out


def preference_pairs(comparisons: Sequence[Comparison], judged: Sequence[Tuple[float, List[str]]], min_margin: float) -> List[dict]:
    """Post-training I's preference records {"prompt", "chosen", "rejected"} plus the judge's "cai_preference"
    (P(chosen is better), >= 0.5), "cai_principles" and "cai_source". A pair whose margin |2p - 1| is below
    `min_margin`, or an exact tie, is left out."""
    pairs = []
    for comparison, (p_first, names) in zip(comparisons, judged):
        if p_first == 0.5 or abs(2 * p_first - 1) < min_margin:
            continue
        first_wins = p_first > 0.5
        chosen, rejected = (comparison.response_a, comparison.response_b) if first_wins else (comparison.response_b, comparison.response_a)
        pairs.append({
            "prompt": comparison.prompt, "chosen": chosen, "rejected": rejected,
            "cai_preference": round(max(p_first, 1 - p_first), 6), "cai_principles": names, "cai_source": comparison.where,
        })
    if len(pairs) < len(comparisons):
        log.info("%d of %d comparisons left out: ties or a margin below %g", len(comparisons) - len(pairs), len(comparisons), min_margin)
    return pairs


def sampled_comparisons(items: Sequence, reply: Callable[[Sequence[list], Sequence[str], str], List[str]]) -> List[Comparison]:
    """Two sampled responses of a policy per prompt (one batch holds both copies); a prompt whose two responses are
    equal or empty is left out, with a warning."""
    conversations = [[user(item.prompt)] for item in items for _ in range(2)]
    texts = reply(conversations, [item.where for item in items for _ in range(2)], "policy response")
    pairs = [Comparison(item.prompt, texts[2 * i], texts[2 * i + 1], item.where) for i, item in enumerate(items)]
    kept = [c for c in pairs if c.response_a and c.response_b and c.response_a != c.response_b]
    if len(kept) < len(pairs):
        log.warning("%d of %d prompts left out: the policy's two responses were equal or empty", len(pairs) - len(kept), len(pairs))
    return kept
