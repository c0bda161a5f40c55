"""The chat template a served model renders conversations with: the one it was post-trained with, else the default.

It picks and renders templates only; tokenizing and generating are the app's and the engine's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import ChatTemplate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedTemplate:
    template: ChatTemplate
    stop: Sequence[str]
    """Text that ends an assistant turn when the tokenizer has no single token for it (a model never post-trained)."""

    def prompt(self, messages: List[dict]) -> str:
        return self.template.render(messages, add_generation_prompt=True, where="messages")


def served_template(job, tokenizer, source: Optional[str] = None) -> ServedTemplate:
    """`source` when given (ChatTemplate.load: a .jinja file or a tokenizer directory); else the run's recorded template
    (`posttrain.chat_template_text`, written by post-training), else the shipped one.

    A model post-trained with a template has its end-of-turn token, which the engine stops at. A pretrained model
    usually lacks it (its tokenizer spells `<|im_end|>` in pieces): the shipped template still renders, and its
    end-of-turn text becomes a stop string. Also the chat template of evaluation's and SWE-bench's `--chat`.
    """
    if source is not None:
        return ServedTemplate(ChatTemplate.load(source, tokenizer), ())
    posttrain = getattr(job, "posttrain", None)
    text = getattr(posttrain, "chat_template_text", None)
    origin = "the run's post-training template (posttrain.chat_template_text)" if text else None
    try:
        template = ChatTemplate(text, origin, tokenizer) if text else ChatTemplate.load(None, tokenizer)
        return ServedTemplate(template, ())
    except MegatronSotaError as err:
        if text:
            raise
        log.info("chat: %s; the end of a turn is matched as text instead", err)
    template = ChatTemplate.load(None, tokenizer, end_of_turn_token=False)
    return ServedTemplate(template, (template.end_of_turn,))
