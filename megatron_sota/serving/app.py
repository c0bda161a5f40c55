"""The model server's HTTP side: OpenAI's routes over the engine, with streaming, errors in OpenAI's shape and metrics.

It turns requests into engine jobs and events into responses; it must not run the model (serving/engine.py does).

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /health, GET /metrics. A bad request is a
400 listing every problem at once; an unknown model a 404; a full queue a 503 with Retry-After (the gateway in front
answers 429 per API key); a failed generation a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import AsyncIterator, List, Optional, Sequence, Tuple, Type, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from megatron_sota.config.generation import GenerationConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.serving import openai_api as api
from megatron_sota.serving.chat import ServedTemplate
from megatron_sota.serving.engine import Delta, Engine, Failure, Job, Outcome, QueueFull

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
"""What a 503 for a full queue asks the client to wait."""


@dataclass
class ServedModel:
    name: str
    """The `model` requests must name (/v1/models' id)."""
    root: str
    """The checkpoint directory served (its iteration): the revision a response cache keys on."""
    tokenizer: object
    context: int
    defaults: GenerationConfig
    chat: Optional[ServedTemplate]
    created: int = 0


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, kind: str = "invalid_request_error",
                 param: Optional[str] = None, headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param, self.headers = status, message, code, kind, param, headers


def build_app(served: ServedModel, engine: Engine, metrics) -> FastAPI:
    app = FastAPI(title="megatron_sota server", docs_url=None, redoc_url=None)
    served.created = served.created or int(time.time())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        """FastAPI's own errors (an unknown route, a wrong method) in OpenAI's shape too."""
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return JSONResponse(api.error_body(f"{request.method} {request.url.path}: {err.detail}", kind),
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.get("/health")
    async def health() -> Response:
        alive = engine.alive
        return JSONResponse({"status": "ok" if alive else "generation thread stopped"}, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> Response:
        card = {"id": served.name, "object": "model", "created": served.created, "owned_by": "megatron_sota",
                "root": served.root, "max_model_len": served.context}
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _serve(request, "/v1/completions", api.CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _serve(request, "/v1/chat/completions", api.ChatCompletionRequest)

    async def _serve(request: Request, route: str, schema: Type[api.SamplingFields]) -> Response:
        start = time.perf_counter()
        try:
            body = await _parse(request, schema)
            jobs, events = _jobs(body, served, asyncio.get_running_loop())
            try:
                engine.submit(jobs)
            except QueueFull as err:
                raise RequestError(503, f"the server is busy: {err}; retry after {RETRY_AFTER_S} s", "server_busy",
                                   "server_error", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except RequestError as err:
            metrics.request_finished(route, err.status, time.perf_counter() - start)
            return JSONResponse(api.error_body(err.message, err.kind, err.code, err.param), status_code=err.status,
                                headers=err.headers)
        rid = api.new_id("chatcmpl" if route.endswith("chat/completions") else "cmpl")
        if body.stream:
            stream = _stream(route, body, served.name, rid, jobs, events, start)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        outcomes = await _collect(jobs, events)
        prompt_tokens = sum(o.prompt_tokens for o in outcomes if isinstance(o, Outcome))
        completion_tokens = sum(o.completion_tokens for o in outcomes if isinstance(o, Outcome))
        failures = [o for o in outcomes if isinstance(o, Failure)]
        if failures:
            metrics.request_finished(route, 500, time.perf_counter() - start, prompt_tokens, completion_tokens)
            return JSONResponse(api.error_body(failures[0].message, "server_error", "generation_failed"), status_code=500)
        metrics.request_finished(route, 200, time.perf_counter() - start, prompt_tokens, completion_tokens)
        texts, reasons = [o.text for o in outcomes], [o.finish_reason for o in outcomes]
        if isinstance(body, api.ChatCompletionRequest):
            return JSONResponse(api.chat_body(rid, served.name, texts[0], reasons[0], prompt_tokens, completion_tokens))
        return JSONResponse(api.completion_body(rid, served.name, texts, reasons, prompt_tokens, completion_tokens))

    async def _stream(route: str, body, model: str, rid: str, jobs: List[Job], events: asyncio.Queue,
                      start: float) -> AsyncIterator[str]:
        chat = isinstance(body, api.ChatCompletionRequest)
        status, prompt_tokens, completion_tokens, open_jobs = 200, 0, 0, len(jobs)
        try:
            if chat:
                yield _sse(api.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
            while open_jobs:
                index, event = await events.get()
                if isinstance(event, Delta):
                    chunk = (api.chat_chunk(rid, model, {"content": event.text}, None) if chat
                             else api.completion_chunk(rid, model, index, event.text, None))
                elif isinstance(event, Outcome):
                    open_jobs -= 1
                    prompt_tokens += event.prompt_tokens
                    completion_tokens += event.completion_tokens
                    chunk = (api.chat_chunk(rid, model, {}, event.finish_reason) if chat
                             else api.completion_chunk(rid, model, index, "", event.finish_reason))
                else:  # a failure mid-stream: the status line is sent, so the error goes in the stream
                    status = 500
                    yield _sse(api.error_body(event.message, "server_error", "generation_failed"))
                    break
                yield _sse(chunk)
            if status == 200 and body.stream_options is not None and body.stream_options.include_usage:
                obj = "chat.completion.chunk" if chat else "text_completion"
                yield _sse(api.usage_chunk(rid, model, obj, prompt_tokens, completion_tokens))
            yield "data: [DONE]\n\n"
        finally:
            for job in jobs:
                job.cancelled = True  # a client that went away stops its rows; finished rows are unaffected
            metrics.request_finished(route, status, time.perf_counter() - start, prompt_tokens, completion_tokens)

    return app


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _parse(request: Request, schema: Type[api.SamplingFields]) -> api.SamplingFields:
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"expected a JSON body, found invalid JSON: {err}") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()]
        raise RequestError(400, "; ".join(problems), param=str(err.errors()[0]["loc"][0]) if err.errors()[0]["loc"] else None) from None


def _settings(body: api.SamplingFields, defaults: GenerationConfig) -> SamplingSettings:
    def pick(value, default):
        return default if value is None else value

    return SamplingSettings(
        temperature=pick(body.temperature, defaults.temperature), top_k=pick(body.top_k, defaults.top_k),
        top_p=pick(body.top_p, defaults.top_p), repetition_penalty=pick(body.repetition_penalty, defaults.repetition_penalty),
    )


def _jobs(body: api.SamplingFields, served: ServedModel, loop) -> Tuple[List[Job], asyncio.Queue]:
    """The request's completions as engine jobs whose events land on one asyncio queue as (index, event)."""
    if body.model != served.name:
        raise RequestError(404, f"model {body.model!r} is not served here; this server serves {served.name!r}",
                           "model_not_found", param="model")
    settings = _settings(body, served.defaults)
    chat = isinstance(body, api.ChatCompletionRequest)
    budget = body.budget() if chat else body.max_tokens
    problems = body.unsupported() + api.sampling_problems(body, settings, budget)
    if problems:
        raise RequestError(400, "; ".join(problems))
    prompts, stop = _prompt_ids(body, served)
    events: asyncio.Queue = asyncio.Queue()
    jobs = []
    for index, ids in enumerate(prompts):
        room = served.context - len(ids)
        wanted = budget if budget is not None else min(room, served.defaults.max_new_tokens)
        if wanted > room:
            raise RequestError(
                400, f"this model's context is {served.context} tokens; prompt {index} has {len(ids)} tokens and "
                f"max_tokens asks for {wanted} more", "context_length_exceeded", param="max_tokens",
            )
        seed = body.seed + index if body.seed is not None else secrets.randbits(62)
        jobs.append(Job(ids, wanted, settings, seed, _emitter(loop, events, index), stop=stop, num_beams=body.num_beams))
    return jobs, events


def _prompt_ids(body: api.SamplingFields, served: ServedModel) -> Tuple[List[List[int]], Sequence[str]]:
    """Token ids per completion and the stop strings (the request's, and a chat template's end-of-turn text)."""
    from megatron_sota.inference.prompts import Prompt, prompt_ids

    stop = body.stop_strings()
    if isinstance(body, api.ChatCompletionRequest):
        try:
            texts: List[Union[str, List[int]]] = [served.chat.prompt([m.as_template_message() for m in body.messages])]
        except MegatronSotaError as err:
            raise RequestError(400, str(err), param="messages") from None
        stop = stop + [s for s in served.chat.stop if s not in stop]
    else:
        texts = body.prompts()
    out = []
    for index, prompt in enumerate(texts):
        if isinstance(prompt, list):
            if not prompt or not all(0 <= i < served.tokenizer.vocab_size for i in prompt):
                raise RequestError(400, f"prompt {index}: expected token ids in [0, {served.tokenizer.vocab_size}), "
                                        f"found {prompt[:8]}", param="prompt")
            ids = list(prompt)
        else:
            try:
                ids, _ = prompt_ids(served.tokenizer, Prompt(index, prompt), served.context - 1, "error")
            except MegatronSotaError as err:
                raise RequestError(400, str(err), "context_length_exceeded" if "context" in str(err) else None,
                                   param="messages" if isinstance(body, api.ChatCompletionRequest) else "prompt") from None
        out.append(ids)
    return out, stop


def _emitter(loop, events: asyncio.Queue, index: int):
    def emit(event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (index, event))

    return emit


async def _collect(jobs: List[Job], events: asyncio.Queue) -> List[Union[Outcome, Failure]]:
    """Each job's outcome (or failure), in job order; deltas are not needed for a whole response."""
    outcomes: List[Optional[Union[Outcome, Failure]]] = [None] * len(jobs)
    try:
        while any(o is None for o in outcomes):
            index, event = await events.get()
            if isinstance(event, (Outcome, Failure)):
                outcomes[index] = event
    finally:
        for job in jobs:
            job.cancelled = True  # the client went away before the response: its rows stop
    return outcomes  # type: ignore[return-value]
