"""A small OpenAI-shaped upstream for the gateway's tests: it answers from the prompt, counts calls, can stream and fail.

Not a model: the completion text is chosen by words in the prompt ("pii", "toxic", "fail") so each gateway path is reachable.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

PII_TEXT = "Write to alice@example.com or call 555-123-4567."
TOXIC_TEXT = "You stupid worthless idiot, I hate you, shut up you moron."


def _text_for(prompt: str, call: int) -> str:
    if "pii" in prompt:
        return PII_TEXT
    if "toxic" in prompt:
        return TOXIC_TEXT
    return f"answer {call} to: {prompt}"  # the call number makes every upstream answer distinct


def build_fake_upstream() -> FastAPI:
    app = FastAPI()
    app.state.calls = 0

    def next_call() -> int:
        app.state.calls += 1
        return app.state.calls

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        call = next_call()
        if "fail" in body["prompt"]:
            return JSONResponse({"error": {"message": "engine exploded", "type": "internal_error", "code": "boom"}}, 500)
        text = _text_for(body["prompt"], call)
        if body.get("stream"):
            async def events():
                for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                    chunk = {"id": f"cmpl-{call}", "object": "text_completion", "model": body["model"],
                             "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": f"cmpl-{call}", "object": "text_completion", "created": call, "model": body["model"],
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        call = next_call()
        text = _text_for(body["messages"][-1]["content"], call)
        return {"id": f"chatcmpl-{call}", "object": "chat.completion", "created": call, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "tiny", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app
