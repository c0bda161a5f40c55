"""A small OpenAI-shaped server for the load-test tests: known token timing, every Nth request refused with 429.

It stands in for a model server so the load test's numbers can be checked against what the server did; it generates
nothing real and must not be used to test the model server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "load-test-model"


class LoadTestApp:
    """The app (`app`) and what it saw: requests by arrival, the most in flight at once."""

    def __init__(self, token_seconds: float = 0.01, refuse_every: int = 0) -> None:
        self.token_seconds = token_seconds
        self.refuse_every = refuse_every  # 0: refuse none
        self.arrived = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/completions")(self.completions)
        self.app.post("/v1/chat/completions")(self.completions)

    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    async def completions(self, request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        self.arrived += 1
        if self.refuse_every and self.arrived % self.refuse_every == 0:
            error = {"message": "rate limited", "type": "rate_limit_exceeded", "code": 429}
            return JSONResponse({"error": error}, status_code=429, headers={"Retry-After": "1"})
        tokens = body["max_tokens"]
        chat = "messages" in body
        if body.get("stream"):
            return StreamingResponse(self.chunks(tokens, chat), media_type="text/event-stream")
        async with self.running():
            await asyncio.sleep(tokens * self.token_seconds)
        choice = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": "x" * tokens}} if chat else {"text": "x" * tokens})
        return {"object": "chat.completion" if chat else "text_completion", "model": MODEL, "choices": [choice],
                "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}}

    async def chunks(self, tokens: int, chat: bool):  # type: ignore[no-untyped-def]
        async with self.running():
            for _ in range(tokens):
                await asyncio.sleep(self.token_seconds)
                choice = {"index": 0, "delta": {"content": "x"}} if chat else {"index": 0, "text": "x"}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
        usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    @contextlib.asynccontextmanager
    async def running(self):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serves app with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL, stops it on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
