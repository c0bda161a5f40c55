"""SWE-bench predictions: a prompt per instance, greedy patches generated in batches, the patch cut out of each reply.

The records it yields are SWE-bench's predictions format, for the official harness to score; nothing of the harness
(checkouts, Docker, tests) runs here, and it must not import post-training (chat rendering comes in as a function).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from megatron_sota.evaluation.benchmark_files import SWEBenchInstance

log = logging.getLogger(__name__)

PREDICTION_KEYS = ("instance_id", "model_name_or_path", "model_patch")
"""A prediction's fields, exactly: the harness's KEY_INSTANCE_ID, KEY_MODEL and KEY_PREDICTION."""

_FENCE = re.compile(r"^```[ \t]*(?:diff|patch)[ \t]*\n(.*?)(?:^```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_DIFF_START = re.compile(r"^(?:diff --git |--- a/)", re.MULTILINE)
_CLOSING_FENCE = re.compile(r"^```[ \t]*$", re.MULTILINE)


def instance_prompt(instance: SWEBenchInstance) -> str:
    """The instance's ready `text` (oracle/BM25 datasets) when it has one, else the issue and its hints with the
    request for a unified diff."""
    if instance.text is not None:
        return instance.text
    hints = f"\nComments on the issue before the fix:\n{instance.hints_text.strip()}\n" if instance.hints_text.strip() else ""
    return (
        f"Repository: {instance.repo} at commit {instance.base_commit}.\n\n"
        f"Issue:\n{instance.problem_statement.strip()}\n{hints}\n"
        "Write a patch that resolves the issue, as a unified diff that `git apply` accepts (paths a/... and b/... "
        "from the repository root), in a ```diff block.\n"
    )


def extract_patch(reply: str) -> str:
    """The patch in a model's reply: its ```diff / ```patch blocks (joined, an unclosed last one read to the end),
    else from the first line starting "diff --git " or "--- a/" up to a closing ``` line or the end; "" if none.
    A patch ends with a newline, which `git apply` needs after its last line."""
    blocks = [block for block in _FENCE.findall(reply) if block.strip()]
    if blocks:
        patch = "".join(block if block.endswith("\n") else block + "\n" for block in blocks)
    else:
        start = _DIFF_START.search(reply)
        if start is None:
            return ""
        patch = reply[start.start():]
        end = _CLOSING_FENCE.search(patch)
        patch = patch[: end.start()] if end is not None else patch
    patch = patch.rstrip() + "\n"
    return patch if patch.strip() else ""


def prediction(instance_id: str, model_name: str, patch: str) -> dict:
    """One line of a predictions file."""
    return dict(zip(PREDICTION_KEYS, (instance_id, model_name, patch)))


@dataclass
class PatchWriter:
    """Generates each instance's reply with an InferenceModel, greedy, `batch_size` prompts per generate() call."""

    model: object
    """An InferenceModel."""
    tokenizer: object
    max_new_tokens: int
    batch_size: int = 4
    render: Callable[[str], str] = lambda prompt: prompt
    """Turns an instance's prompt into the model's input text (a chat template's user turn, or unchanged)."""
    stop_ids: Sequence[int] = ()
    """Token ids ending a reply besides end-of-document (a chat template's end-of-turn token)."""
    stop_text: Optional[str] = None
    """Text ending a reply (an end-of-turn spelled in several tokens): the reply is cut before it."""
    overflow: str = "error"
    """A prompt longer than the context: "error", "keep_end" or "keep_start" (inference.prompts.fit_to_context)."""

    def replies(self, instances: Sequence[SWEBenchInstance], progress: Optional[Callable[[int], None]] = None) -> List[str]:
        from megatron_sota.inference.generation import generate
        from megatron_sota.inference.prompts import Prompt, prompt_ids
        from megatron_sota.inference.sampling import SamplingSettings

        greedy = SamplingSettings(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
        context = self.model.job.model.max_position_embeddings
        stops = [self.tokenizer.eod, *self.stop_ids]
        texts: List[str] = []
        for first in range(0, len(instances), self.batch_size):
            batch = instances[first : first + self.batch_size]
            fitted = [
                prompt_ids(self.tokenizer, Prompt(i.instance_id, self.render(instance_prompt(i))), context - 1, self.overflow)
                for i in batch
            ]
            for instance, (_, dropped) in zip(batch, fitted):
                if dropped:
                    log.warning("%s: %d prompt tokens dropped (%s) to fit the context", instance.instance_id, dropped, self.overflow)
            ids = [row for row, _ in fitted]
            budgets = [min(self.max_new_tokens, context - len(row)) for row in ids]
            result = generate(self.model, ids, budgets, greedy, stop_ids=stops)
            for new, reason in zip(result.tokens, result.stop_reasons):
                text = self.tokenizer.detokenize(new[:-1] if reason == "stop_id" else new)
                if self.stop_text and self.stop_text in text:
                    text = text[: text.index(self.stop_text)]
                texts.append(text)
            if progress is not None:
                progress(len(batch))
        return texts
