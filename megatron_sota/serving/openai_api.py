"""The OpenAI API's shapes as the server speaks them: request schemas, response and stream-chunk bodies, error bodies.

Pure data: it must not generate, tokenize or know about the engine. Fields the server cannot honour are accepted only
at their neutral values (a request for `n=2` or `logprobs` is refused with the field named, not silently ignored);
`top_k`, `repetition_penalty` and `num_beams` are extensions (vLLM takes the first two under the same names).
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from megatron_sota.config.generation import generation_problems


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """What completions and chat completions share. None = the server's default (conf/generation)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    num_beams: int = 1
    seed: Optional[int] = None
    stop: Union[str, List[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # OpenAI fields taken only at their neutral values:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[Dict[str, float]] = None
    logprobs: Union[None, bool, int] = None

    def stop_strings(self) -> List[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> List[str]:
        """Fields set to what the server cannot do, each named."""
        problems = []
        if self.n != 1:
            problems.append(f"n: only 1 completion per prompt is served, found {self.n}")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                problems.append(f"{name}: not supported (use repetition_penalty), found {getattr(self, name)}")
        if self.logit_bias:
            problems.append("logit_bias: not supported")
        if self.logprobs not in (None, False, 0):
            problems.append(f"logprobs: not supported, found {self.logprobs!r}")
        if self.num_beams > 1 and self.stream:
            problems.append("num_beams: beam search is not streamed (set stream=false)")
        if len(self.stop_strings()) > 4:
            problems.append(f"stop: at most 4 stop strings, found {len(self.stop_strings())}")
        return problems


class CompletionRequest(SamplingFields):
    prompt: Union[str, List[str], List[int], List[List[int]]]
    max_tokens: Optional[int] = 16
    """OpenAI's default for completions."""
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def unsupported(self) -> List[str]:
        problems = super().unsupported()
        if self.echo:
            problems.append("echo: not supported")
        if self.suffix:
            problems.append("suffix: not supported")
        if self.best_of not in (None, 1):
            problems.append(f"best_of: not supported, found {self.best_of}")
        return problems

    def prompts(self) -> List[Union[str, List[int]]]:
        """One entry per completion: a text or token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and all(isinstance(i, int) for i in p)):
            return [p]
        return list(p)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, List[ContentPart]]
    name: Optional[str] = None

    def as_template_message(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(SamplingFields):
    messages: List[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    """None: up to the model's context (capped by generation.max_new_tokens)."""

    def budget(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def sampling_problems(request: SamplingFields, resolved, max_tokens: Optional[int]) -> List[str]:
    """Out-of-range sampling values (the rules of conf/generation), named as the request's fields; `resolved`: the
    SamplingSettings the request comes to with the server's defaults filled in."""
    fields = SimpleNamespace(
        temperature=resolved.temperature, top_p=resolved.top_p, top_k=resolved.top_k,
        repetition_penalty=resolved.repetition_penalty, max_new_tokens=1 if max_tokens is None else max_tokens,
        num_beams=request.num_beams,
    )
    names = {"max_new_tokens": "max_tokens"}
    return generation_problems(fields, name=lambda field: names.get(field, field))


# -- responses --------------------------------------------------------------------------------------------------


def error_body(message: str, kind: str = "invalid_request_error", code: Optional[str] = None,
               param: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(rid: str, model: str, texts: List[str], reasons: List[str], prompt_tokens: int,
                    completion_tokens: int) -> Dict[str, Any]:
    choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_body(rid: str, model: str, text: str, reason: str, prompt_tokens: int, completion_tokens: int) -> Dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model, "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(rid: str, model: str, index: int, text: str, reason: Optional[str]) -> Dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice]}


def chat_chunk(rid: str, model: str, delta: Dict[str, str], reason: Optional[str]) -> Dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(rid: str, model: str, obj: str, prompt_tokens: int, completion_tokens: int) -> Dict[str, Any]:
    """The last chunk of a stream with stream_options.include_usage: no choices, the request's usage."""
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}
