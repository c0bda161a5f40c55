"""Checks on what the upstream wrote before a client sees it: PII redaction, the toxicity model, stop and length checks.

Reuses the curation pipeline's redaction and toxicity model; it must not call the upstream again or rewrite clean text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from megatron_sota.curation.filters.toxicity import ToxicityFilter
from megatron_sota.curation.pii import redact


@dataclass
class OutputVerdict:
    text: str
    """what the client receives: redacted, cut at a leaked stop string, or "" when refused"""
    redactions: dict[str, int] = field(default_factory=dict)
    refused: bool = False
    problems: list[str] = field(default_factory=list)
    """"toxic", "stop_string_in_output", "too_long": every check that fired"""


class OutputChecker:
    """Refuses toxic output (the choice's text becomes "" with finish_reason "content_filter", as OpenAI does);
    redacts PII; cuts text at a stop string the upstream let through; flags text over `max_chars`.

    Toxicity uses the curation filter's 64-word chunks; one chunk at or above `toxicity_threshold` refuses.
    """

    # Why 0.99 and not the curation filter's 0.8: completions are short, and short technical lines score high
    # (alt-profanity-check 1.0.6: "kill the process and collect garbage" 0.90, "kill -9 the damn zombie process"
    # 0.88, "The hell with it, just reboot." 0.98) while direct insults score 1.00.
    def __init__(self, max_chars: int = 100_000, toxicity_threshold: float = 0.99, check_toxicity: bool = True):
        self.max_chars = max_chars
        self.check_toxicity = check_toxicity
        self._toxicity = ToxicityFilter(max_toxic_fraction=0.0, chunk_threshold=toxicity_threshold)

    def check(self, texts: Sequence[str], stop: Sequence[str] = ()) -> list[OutputVerdict]:
        """One verdict per choice's text; the toxicity model is called once for all of them."""
        toxic = self._toxicity.toxic_fractions(list(texts)) if self.check_toxicity else [0.0] * len(texts)
        return [self._check_one(text, fraction, stop) for text, fraction in zip(texts, toxic)]

    def _check_one(self, text: str, toxic_fraction: float, stop: Sequence[str]) -> OutputVerdict:
        problems = []
        if toxic_fraction > 0:
            return OutputVerdict("", refused=True, problems=["toxic"])
        cuts = [text.index(s) for s in stop if s and s in text]
        if cuts:
            text = text[: min(cuts)]
            problems.append("stop_string_in_output")
        text, redactions = redact(text)  # before the length cut, which could leave half an address unrecognised
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
            problems.append("too_long")
        return OutputVerdict(text, redactions, problems=problems)


def stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop or [] if isinstance(s, str)]


def check_response(checker: OutputChecker, route: str, request: dict, response: dict) -> dict[str, int]:
    """Applies the verdicts to an OpenAI response in place; returns what fired, counted: "toxic" (the choice refused),
    "pii_<type>", "stop_string_in_output", "too_long", "over_max_tokens" (usage above the request's max_tokens)."""
    choices = [c for c in response.get("choices") or [] if isinstance(c, dict)]
    # (choice, the dict holding its text, the text's key): completions hold "text", chat holds message.content.
    if route == "completions":
        holders = [(c, c, "text") for c in choices if isinstance(c.get("text"), str)]
    else:
        holders = [(c, c["message"], "content") for c in choices
                   if isinstance(c.get("message"), dict) and isinstance(c["message"].get("content"), str)]
    counts: dict[str, int] = {}
    verdicts = checker.check([holder[name] for _, holder, name in holders], stop_strings(request))
    for (choice, holder, name), verdict in zip(holders, verdicts):
        holder[name] = verdict.text
        if verdict.refused:
            choice["finish_reason"] = "content_filter"
        for problem in verdict.problems:
            counts[problem] = counts.get(problem, 0) + 1
        for kind, n in verdict.redactions.items():
            counts[f"pii_{kind}"] = counts.get(f"pii_{kind}", 0) + n
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    used = (response.get("usage") or {}).get("completion_tokens")
    if isinstance(max_tokens, int) and isinstance(used, int) and used > max_tokens * max(1, int(request.get("n") or 1)):
        counts["over_max_tokens"] = 1
    return counts
