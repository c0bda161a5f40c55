"""The server's answers to bad and unservable requests, in OpenAI's error shape, through the real `openai` client on
the app in this process (its generation thread never started: none of these requests reaches the model)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from megatron_sota.config.generation import GenerationConfig
from megatron_sota.serving.app import RETRY_AFTER_S, ServedModel, build_app
from megatron_sota.serving.chat import served_template
from megatron_sota.serving.engine import Engine
from megatron_sota.serving.metrics import ServerMetrics

openai = pytest.importorskip("openai")

CONTEXT = 64


@pytest.fixture(scope="module")
def app(stdlib_shards):
    from megatron_sota.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    engine = Engine(model=None, tokenizer=tokenizer, stop_ids=[tokenizer.eod], max_batch=2, max_queue=1)
    served = ServedModel("tiny", "/ckpt/iter_0000020", tokenizer, CONTEXT, GenerationConfig(), served_template(None, tokenizer))
    return build_app(served, engine, ServerMetrics())


def _call(app, method: str, **request):
    """(status, headers, body) of a call through AsyncOpenAI on the app; errors are caught and returned."""

    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            client = openai.AsyncOpenAI(base_url="http://server/v1", api_key="unused", max_retries=0, http_client=http)
            target = client.completions if method == "completions" else client.chat.completions
            try:
                return 200, {}, await target.create(**request)
            except openai.APIStatusError as err:
                return err.status_code, err.response.headers, err.response.json()

    return asyncio.run(call())


def test_every_bad_field_is_named_at_once_in_openai_error_shape(app):
    status, _, body = _call(app, "completions", model="tiny", prompt="x", temperature=-1, top_p=2, n=2,
                            frequency_penalty=0.5, max_tokens=0)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    for field in ("temperature", "top_p", "n:", "frequency_penalty", "max_tokens"):
        assert field in message, (field, message)


def test_unknown_fields_and_bad_messages_are_400s(app):
    status, _, body = _call(app, "completions", model="tiny", prompt="x", extra_body={"temprature": 0})
    assert status == 400 and "temprature" in body["error"]["message"]
    status, _, body = _call(app, "chat", model="tiny", messages=[{"role": "robot", "content": "hi"}])
    assert status == 400 and "role" in body["error"]["message"]


def test_unknown_model_is_a_404(app):
    status, _, body = _call(app, "completions", model="other", prompt="x")
    assert status == 404 and body["error"]["code"] == "model_not_found" and "'tiny'" in body["error"]["message"]


def test_a_prompt_and_budget_beyond_the_context_are_refused(app):
    status, _, body = _call(app, "completions", model="tiny", prompt="def f(x):\n    return x", max_tokens=CONTEXT)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, _, body = _call(app, "completions", model="tiny", prompt="word " * CONTEXT, max_tokens=1)
    assert status == 400 and body["error"]["param"] == "prompt" and "context" in body["error"]["message"]


def test_full_queue_answers_503_with_retry_after(app):
    status, headers, body = _call(app, "completions", model="tiny", prompt=["a b", "c d"], max_tokens=2)
    assert status == 503 and headers["retry-after"] == str(RETRY_AFTER_S)
    assert body["error"]["code"] == "server_busy"


def test_health_says_when_the_generation_thread_is_not_running(app):
    async def get():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as http:
            return await http.get("/health")

    assert asyncio.run(get()).status_code == 503


def test_unknown_routes_and_methods_answer_in_openai_shape(app):
    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server") as http:
            return await http.get("/v1/engines"), await http.get("/v1/completions")

    missing, wrong_method = asyncio.run(call())
    assert missing.status_code == 404 and "/v1/engines" in missing.json()["error"]["message"]
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"
