"""Chat templates: records rendered by a Jinja template into token ids and the mask of the tokens a loss trains.

It renders and tokenizes only; it must not read data files (records.py) or build batches or models.

Rendering is transformers' (a sandboxed Jinja environment with trim_blocks, lstrip_blocks, loop controls,
`raise_exception`, `strftime_now` and a `tojson` that does not escape HTML; the variables `messages`, `tools`,
`documents`, `add_generation_prompt` and the tokenizer's bos/eos/pad token names), so the exported tokenizer's
`apply_chat_template(..., tokenize=True)` gives the same ids. The text is tokenized with the DatasetTokenizer's
tokenize(): special tokens spelled in the text (`<|im_end|>`) become their single ids, as in transformers, since
`tokenizers` matches added tokens (and SentencePiece user-defined pieces) in text.

What is trained (Encoded.trained[i]: token i is a target, predicted from ids[:i]; token 0 never is):
- An assistant turn is found by rendering the conversation prefix by prefix, not from `{% generation %}` tags:
  the ids of messages[:k] rendered with the generation prompt must be a prefix of the conversation's ids, and
  the turn's trained tokens run from there to the end of the template's end-of-turn text (e.g. `<|im_end|>`),
  which is therefore always trained; what the template writes after it (a newline) is not. The end-of-turn text
  is found once per template by rendering a probe conversation; it must be a single token of the tokenizer.
- `messages` records train every assistant turn (assistant_only) or every token (not assistant_only).
- `prompt`/`completion` records train the assistant turns of the completion (assistant_only) or every token after
  the prompt. The prompt's ids (rendered with the generation prompt) must be a prefix of the ids of prompt +
  completion, else the record is refused: otherwise the model would learn from a context it never sees when it
  is prompted (the silent bug of TRL #2054; TRL 1.16 now drops the differing end of the prompt with a warning).
- Preference records train every token after the prompt, for `chosen` and `rejected` alike (TRL's DPO split).
The shipped default template (templates/chatml.jinja) wraps assistant content and <|im_end|> in
`{% generation %}`, so transformers' return_assistant_tokens_mask and TRL's assistant_only_loss mark the same
tokens; this environment renders that tag's body.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Optional

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from megatron_sota.conversion.tokenizer_export import special_token_ids
from megatron_sota.data.tokenizer_interface import DatasetTokenizer
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.records import MAX_LISTED, Messages, PreferenceRecord, SFTRecord

DEFAULT_TEMPLATE = "chatml.jinja"
"""The shipped template (megatron_sota/posttrain/templates/), used when no template is configured."""
_PROBE = "megatron_sota probe reply 7f3a"
"""Assistant content of the probe conversation: plain words (a template may escape others), written by no template."""


@dataclass(frozen=True)
class Encoded:
    """One rendered sequence."""

    ids: tuple[int, ...]
    trained: tuple[bool, ...]
    """trained[i]: token i is a target of the loss (the model learns to predict it from ids[:i])."""
    where: str
    """"path:line" of the record."""


class _Generation(Extension):
    """`{% generation %}...{% endgeneration %}` renders its body: transformers uses the tag for assistant masks."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML, which would change the text transformers renders.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    # The options transformers renders chat templates with; any other would render other text.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return env


class ChatTemplate:
    """A Jinja chat template with the special-token names it is rendered with, and its end-of-turn text."""

    def __init__(self, text: str, origin: str, tokenizer: DatasetTokenizer, end_of_turn_token: bool = True) -> None:
        self.text = text
        """The template source, as written into an export's tokenizer_config.json."""
        self.origin = origin
        """Where the template came from, for messages."""
        try:
            self._template = _environment().from_string(text)
        except jinja2.TemplateSyntaxError as err:
            raise MegatronSotaError(
                f"chat template {origin}: expected a Jinja template, found a syntax error at line {err.lineno}: "
                f"{err.message}"
            ) from None
        names = {key[: -len("_id")]: value for key, value in special_token_ids(tokenizer).items()}
        self.special_tokens = {key: tokenizer.inv_vocab[i] for key, i in names.items() if i is not None}
        """bos_token / eos_token / pad_token names the template sees (those the HF export names)."""
        self.end_of_turn = self._probe_end_of_turn(tokenizer if end_of_turn_token else None)
        """The text the template writes after an assistant message's content (its end-of-turn token; with
        end_of_turn_token=False, as for serving a model never post-trained, it may be several tokens)."""

    @classmethod
    def load(cls, source: Optional[str], tokenizer: DatasetTokenizer, end_of_turn_token: bool = True) -> "ChatTemplate":
        """The shipped default (None), a .jinja file, a tokenizer_config.json's `chat_template`, or a tokenizer
        directory's template (its chat_template.jinja, else its tokenizer_config.json's)."""
        origin = f"{DEFAULT_TEMPLATE} (the shipped default)" if source is None else source
        return cls(template_text(source), origin, tokenizer, end_of_turn_token)

    def render(self, messages: Messages, add_generation_prompt: bool = False, where: str = "") -> str:
        try:
            return self._template.render(
                messages=list(messages), tools=None, documents=None,
                add_generation_prompt=add_generation_prompt, **self.special_tokens,
            )
        except jinja2.TemplateError as err:
            raise MegatronSotaError(
                f"{where or 'chat template'}: expected chat template {self.origin} to render the conversation, "
                f"found an error: {err}"
            ) from None

    def _probe_end_of_turn(self, tokenizer: Optional[DatasetTokenizer]) -> str:
        user = ({"role": "user", "content": "question"},)
        prompt = self.render(user, add_generation_prompt=True)
        full = self.render(user + ({"role": "assistant", "content": _PROBE},))
        turn = full[len(prompt):] if full.startswith(prompt) else ""
        if _PROBE not in turn:
            raise MegatronSotaError(
                f"chat template {self.origin}: expected [user, assistant] to render as the [user] conversation "
                f"with the generation prompt followed by the assistant's content, found {full!r} after {prompt!r}"
            )
        end = turn[turn.index(_PROBE) + len(_PROBE):].rstrip()
        if tokenizer is None:
            return end
        ids = tokenizer.tokenize(end)
        if len(ids) != 1:
            raise MegatronSotaError(
                f"chat template {self.origin}: expected an end-of-turn token after each assistant message, "
                f"one token of the tokenizer (the model must learn to end its turn), found {end!r} "
                f"(token ids {ids}); add it to the tokenizer (train_tokenizer --special-tokens) or use another "
                f"template"
            )
        return end


def template_text(source: Optional[str]) -> str:
    """The Jinja text of a configured `posttrain.chat_template` (see ChatTemplate.load); None: the shipped default."""
    if source is None:
        return resources.files("megatron_sota.posttrain").joinpath("templates", DEFAULT_TEMPLATE).read_text("utf-8")
    return _read_template(source)


def _read_template(source: str) -> str:
    path = source
    if os.path.isdir(source):
        jinja = os.path.join(source, "chat_template.jinja")
        path = jinja if os.path.isfile(jinja) else os.path.join(source, "tokenizer_config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise MegatronSotaError(
            f"chat template {source!r}: expected a .jinja file, a tokenizer_config.json or a directory holding "
            f"one, found {err.strerror or err} ({path})"
        ) from None
    if not path.endswith(".json"):
        return text
    try:
        template = json.loads(text).get("chat_template")
    except (json.JSONDecodeError, AttributeError) as err:
        raise MegatronSotaError(f"chat template {path}: expected a JSON object, found {err}") from None
    if isinstance(template, list):  # named templates: transformers applies "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise MegatronSotaError(f"chat template {path}: expected a 'chat_template' string, found {template!r}")
    return template


def encode_sft(
    record: SFTRecord, template: ChatTemplate, tokenizer: DatasetTokenizer,
    assistant_only: bool = True, max_tokens: Optional[int] = None,
) -> Encoded:
    """The record's ids and trained mask (see the module docstring); a MegatronSotaError naming the record for a
    prompt that is not a prefix, a turn that cannot be found, nothing trained, or more than max_tokens ids."""
    render = _Renderer(record.where, template, tokenizer, record.messages)
    start = render.prompt_end(record.prompt) if record.prompt else 0
    trained = [False] * len(render.ids)
    if assistant_only:
        for k in range(len(record.prompt), len(record.messages)):
            if record.messages[k]["role"] == "assistant":
                begin, end = render.turn(k)
                trained[begin:end] = [True] * (end - begin)
    else:
        trained[max(start, 1):] = [True] * (len(trained) - max(start, 1))
    return render.encoded(trained, max_tokens)


def encode_preference(
    record: PreferenceRecord, template: ChatTemplate, tokenizer: DatasetTokenizer, max_tokens: Optional[int] = None
) -> tuple[Encoded, Encoded]:
    """(chosen, rejected): prompt + completion ids, every token after the prompt trained."""
    pair = []
    for completion in (record.chosen, record.rejected):
        render = _Renderer(record.where, template, tokenizer, record.prompt + completion)
        start = render.prompt_end(record.prompt)
        pair.append(render.encoded([i >= start for i in range(len(render.ids))], max_tokens))
    return pair[0], pair[1]


def encode_sft_records(
    records: Sequence[SFTRecord], template: ChatTemplate, tokenizer: DatasetTokenizer,
    assistant_only: bool = True, max_tokens: Optional[int] = None,
) -> list[Encoded]:
    """encode_sft of every record; one MegatronSotaError listing every record's problem."""
    return _all(lambda r: encode_sft(r, template, tokenizer, assistant_only, max_tokens), records)


def encode_preference_records(
    records: Sequence[PreferenceRecord], template: ChatTemplate, tokenizer: DatasetTokenizer,
    max_tokens: Optional[int] = None,
) -> list[tuple[Encoded, Encoded]]:
    """encode_preference of every record; one MegatronSotaError listing every record's problem."""
    return _all(lambda r: encode_preference(r, template, tokenizer, max_tokens), records)


def _all(encode: Any, records: Sequence[Any]) -> list:
    encoded, problems = [], []
    for record in records:
        try:
            encoded.append(encode(record))
        except MegatronSotaError as err:
            problems.append(str(err))
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MegatronSotaError(
            f"post-training data: {len(problems)} record(s) cannot be trained on:\n  "
            + "\n  ".join(problems[:MAX_LISTED]) + more
        )
    return encoded


class _Renderer:
    """One conversation's ids, and where its prefixes end among them."""

    def __init__(self, where: str, template: ChatTemplate, tokenizer: DatasetTokenizer, messages: Messages) -> None:
        self.where, self.template, self.tokenizer, self.messages = where, template, tokenizer, messages
        self.text = template.render(messages, where=where)
        self.ids = tokenizer.tokenize(self.text)

    def prompt_end(self, prompt: Messages) -> int:
        """Where the prompt's ids (with the generation prompt) end; they must be a prefix of the whole."""
        ids = self.tokenizer.tokenize(self.template.render(prompt, add_generation_prompt=True, where=self.where))
        self._check_prefix(ids, "the prompt rendered with the generation prompt")
        return len(ids)

    def turn(self, k: int) -> tuple[int, int]:
        """[begin, end) of assistant message k's tokens: its content up to and including the end of turn."""
        before = self.template.render(self.messages[:k], add_generation_prompt=True, where=self.where)
        upto = self.template.render(self.messages[: k + 1], where=self.where)
        eot = self.template.end_of_turn
        cut = upto.rfind(eot, len(before)) if upto.startswith(before) else -1
        if cut < 0:
            raise MegatronSotaError(
                f"{self.where}: message {k} (assistant): expected chat template {self.template.origin} to render "
                f"the messages before it, with the generation prompt, as the start of the conversation up to "
                f"it, followed by its content and {eot!r}; found {before[-40:]!r} then {upto[len(before) - 40:]!r}"
            )
        begin = self._check_prefix(self.tokenizer.tokenize(before), f"the messages before message {k}")
        end = self._check_prefix(self.tokenizer.tokenize(upto[: cut + len(eot)]), f"messages 0..{k}")
        return begin, end

    def _check_prefix(self, ids: list[int], what: str) -> int:
        if ids != self.ids[: len(ids)]:
            at = next((i for i, (a, b) in enumerate(zip(ids, self.ids)) if a != b), min(len(ids), len(self.ids)))
            show = self.tokenizer.detokenize
            raise MegatronSotaError(
                f"{self.where}: expected the token ids of {what} to be a prefix of the whole conversation's ids, "
                f"found them differ at token {at} ({show(ids[at:at + 4])!r} vs {show(self.ids[at:at + 4])!r}): "
                f"the template renders that part differently alone, or tokens merge across its end"
            )
        return len(ids)

    def encoded(self, trained: list[bool], max_tokens: Optional[int]) -> Encoded:
        if max_tokens is not None and len(self.ids) > max_tokens:
            raise MegatronSotaError(
                f"{self.where}: expected at most {max_tokens} tokens (the sequence length), found {len(self.ids)}"
            )
        trained[:1] = [False] * len(trained[:1])  # nothing predicts the first token
        if not any(trained):
            raise MegatronSotaError(
                f"{self.where}: expected tokens to train on, found none with chat template {self.template.origin}"
            )
        return Encoded(tuple(self.ids), tuple(trained), self.where)
