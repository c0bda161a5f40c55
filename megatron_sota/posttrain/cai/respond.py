"""The model's replies to conversations: rendered with the chat template, checked against the context, generated in
batches with megatron_sota.inference.generation.generate, cut at the end of the turn.

One stage of tools/cai.py at a time; it must not know what the conversations are for (critique.py and label.py do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import ChatTemplate


def chat_template_of(model, tokenizer, source: Optional[str], checkpoint: str) -> ChatTemplate:
    """`source` when given; else the template the checkpoint's post-training recorded; else the shipped default."""
    if source is not None:
        return ChatTemplate.load(source, tokenizer)
    recorded = model.job.posttrain.chat_template_text if model.job.posttrain is not None else None
    if recorded:
        return ChatTemplate(recorded, f"the template recorded in {checkpoint}", tokenizer)
    return ChatTemplate.load(None, tokenizer)


def prompt_ids(template: ChatTemplate, tokenizer, conversations: Sequence[list], wheres: Sequence[str], limit: int, what: str) -> List[List[int]]:
    """Each conversation's ids with the generation prompt; every one over `limit` tokens listed in one error."""
    ids = [tokenizer.tokenize(template.render(c, add_generation_prompt=True, where=w)) for c, w in zip(conversations, wheres)]
    over = [f"{w}: {what}: expected at most {limit} tokens, found {len(i)}" for w, i in zip(wheres, ids) if len(i) > limit]
    if over:
        raise MegatronSotaError(
            f"{len(over)} prompt(s) do not fit in the model's context (shorten them, or lower --max-new-tokens for "
            f"later turns):\n  " + "\n  ".join(over)
        )
    return ids


@dataclass
class Replier:
    """Generates a checkpoint's replies, `batch_size` conversations per generate() call."""

    model: object
    """An InferenceModel."""
    tokenizer: object
    template: ChatTemplate
    settings: object
    """SamplingSettings."""
    max_new_tokens: int
    batch_size: int
    seed: int
    progress: Optional[Callable[[int], None]] = None
    calls: int = 0
    """generate() calls so far: each draws from its own seed (seed, seed + 1, ...), so batches do not repeat draws."""

    def reply(self, conversations: Sequence[list], wheres: Sequence[str], what: str) -> List[str]:
        """The assistant's next message after each conversation (stripped; "" when it ended its turn at once)."""
        from megatron_sota.inference.generation import generate

        context = self.model.job.model.max_position_embeddings
        ids = prompt_ids(self.template, self.tokenizer, conversations, wheres, context - 1, what)  # room for one token
        end_of_turn = self.tokenizer.tokenize(self.template.end_of_turn)  # one token (ChatTemplate checks)
        stops = [self.tokenizer.eod, *end_of_turn]
        texts: List[str] = []
        for first in range(0, len(ids), self.batch_size):
            batch = ids[first : first + self.batch_size]
            budgets = [min(self.max_new_tokens, context - len(row)) for row in batch]
            result = generate(self.model, batch, budgets, self.settings, stop_ids=stops, seed=self.seed + self.calls)
            self.calls += 1
            for new, reason in zip(result.tokens, result.stop_reasons):
                texts.append(self.tokenizer.detokenize(new[:-1] if reason == "stop_id" else new).strip())
            if self.progress is not None:
                self.progress(len(batch))
        return texts
