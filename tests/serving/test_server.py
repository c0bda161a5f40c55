"""The model server end to end through the real `openai` client: greedy text equals tools/generate.py's, streams add
up to the whole response, chat renders through the template, concurrent requests are batched without changing them."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.serving.model_server import SERVED_NAME, model_server

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

GENERATE = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "generate.py")
PROMPT = "def parse(self, text):\n    return"


def _client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _streamed(client, **request) -> tuple[list[str], str]:
    """(the text deltas of a streamed completion, its finish reason)."""
    deltas, reason = [], None
    for chunk in client.completions.create(model=SERVED_NAME, stream=True, **request):
        for choice in chunk.choices:
            if choice.text:
                deltas.append(choice.text)
            reason = choice.finish_reason or reason
    return deltas, reason


def test_greedy_completion_is_the_text_tools_generate_prints(server_url, checkpoint):
    served = _client(server_url).completions.create(model=SERVED_NAME, prompt=PROMPT, max_tokens=24, temperature=0)
    tool = subprocess.run(
        [sys.executable, GENERATE, "--load", checkpoint, "--prompt", PROMPT, "--max-new-tokens", "24", "--temperature", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert tool.returncode == 0, tool.stderr
    text = served.choices[0].text
    assert text and tool.stdout == text + "\n"  # the tool prints the completion and a newline
    assert served.usage.prompt_tokens > 0 and served.usage.completion_tokens > 0


def test_stream_adds_up_to_the_response_with_a_stop_string_split_across_chunks(server_url):
    client = _client(server_url)
    request = dict(prompt=PROMPT, max_tokens=24, temperature=0)
    deltas, reason = _streamed(client, **request)
    whole = client.completions.create(model=SERVED_NAME, **request).choices[0]
    assert "".join(deltas) == whole.text and reason == whole.finish_reason
    # A stop string made of the end of one chunk and the start of the next: the server cannot see it in either.
    middle = next(i for i in range(len(deltas) // 2, len(deltas) - 2) if len(deltas[i]) >= 2 and deltas[i + 1])
    stop = deltas[middle][-2:] + deltas[middle + 1][:2]
    expected = whole.text[: whole.text.index(stop)]
    stopped, reason = _streamed(client, stop=[stop], **request)
    assert "".join(stopped) == expected and reason == "stop"
    stopped_whole = client.completions.create(model=SERVED_NAME, stop=[stop], **request)
    assert stopped_whole.choices[0].text == expected
    assert stopped_whole.usage.completion_tokens < request["max_tokens"]  # the row ended there, not at its budget


def test_stream_ends_with_usage_then_done(server_url):
    body = {"model": SERVED_NAME, "prompt": PROMPT, "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server_url}/v1/completions", json=body, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events[:-3])
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"


def test_chat_is_the_completion_of_the_rendered_template(server_url, checkpoint):
    from megatron_sota.posttrain.chat_template import ChatTemplate
    from tests.serving.served_tokenizer import checkpoint_tokenizer

    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Parse a file."}]
    client = _client(server_url)
    chat = client.chat.completions.create(model=SERVED_NAME, messages=messages, max_tokens=16, temperature=0)
    # The tiny model was never post-trained: the shipped ChatML template, its end of turn matched as text.
    template = ChatTemplate.load(None, checkpoint_tokenizer(checkpoint), end_of_turn_token=False)
    rendered = template.render(messages, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    plain = client.completions.create(model=SERVED_NAME, prompt=rendered, max_tokens=16, temperature=0,
                                      stop=[template.end_of_turn])
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens


def test_concurrent_requests_share_batches_and_get_what_they_get_alone(server_url):
    client = _client(server_url)
    prompts = [PROMPT, "import os\n", "class Foo:\n    def __init__(self, name):\n        self.", "for i in range(", "x = [", "# "]
    requests = [dict(prompt=p, max_tokens=12, temperature=0) for p in prompts]
    requests += [dict(prompt=p, max_tokens=12, temperature=0.9, seed=7 + i) for i, p in enumerate(prompts[:3])]
    alone = [client.completions.create(model=SERVED_NAME, **r).choices[0].text for r in requests]
    before = _batch_rows(server_url)
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: client.completions.create(model=SERVED_NAME, **r).choices[0].text, requests))
    assert together == alone
    batches, rows = (after - first for after, first in zip(_batch_rows(server_url), before))
    assert rows == len(requests) and batches < rows  # some requests shared a generate() call


def _batch_rows(url: str) -> tuple[float, float]:
    """(micro-batches run, rows in them) from the server's batch-size histogram."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    value = {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if line.startswith("megatron_sota_batch_size_")}
    return value["megatron_sota_batch_size_count"], value["megatron_sota_batch_size_sum"]


def test_tensor_parallel_server_answers_what_one_process_answers(server_url, checkpoint):
    """TP=2 under torchrun: rank 0 serves and shares each batch and each step's ended rows with rank 1. A batch where
    one row ends early on a stop string (seen only by rank 0) and the others run on shows that both ranks end it."""
    requests = [dict(prompt=PROMPT, max_tokens=16, temperature=0), dict(prompt="import os\n", max_tokens=16, temperature=0)]
    one = _client(server_url)
    alone = [one.completions.create(model=SERVED_NAME, **r).choices[0].text for r in requests]
    stop = alone[0][2:5]
    requests.append(dict(prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop]))
    requests.append(dict(prompt=["x = [", "for i in range("], max_tokens=8, temperature=0.8, seed=11))
    expected = [one.completions.create(model=SERVED_NAME, **r) for r in requests]
    with model_server(checkpoint, SERVED_NAME, tp=2) as url:
        two = _client(url)
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda r: two.completions.create(model=SERVED_NAME, **r), requests))
    assert [[c.text for c in a.choices] for a in answers] == [[c.text for c in e.choices] for e in expected]
    assert answers[2].choices[0].text == alone[0][:alone[0].index(stop)]


def test_a_streamed_load_is_served_without_errors_and_counted_in_metrics_promtool_accepts(server_url, promtool):
    from megatron_sota.serving.load_test import LoadSettings, run_load_test

    def generated() -> float:
        text = httpx.get(f"{server_url}/metrics").text
        return float(next(line.split(" ")[1] for line in text.splitlines() if line.startswith("megatron_sota_generation_tokens_total ")))

    before = generated()
    report = run_load_test(LoadSettings(url=server_url, model=SERVED_NAME, prompts=[PROMPT, "import os\n", "x = ["],
                                        requests=12, concurrency=4, max_tokens=6, stream=True, temperature=0.0))
    assert report["succeeded"] == 12 and report["error_count"] == 0 and report["requests_without_usage"] == 0
    assert report["ttft_p50_s"] <= report["latency_p50_s"] <= report["latency_p99_s"]
    assert report["completion_tokens"] == generated() - before > 0
    exposition = httpx.get(f"{server_url}/metrics").content
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_num_beams_is_transformers_beam_search_on_the_export(server_url, checkpoint, hf_export):
    """On a prompt where 3 beams find another continuation than greedy decoding (so the beams matter)."""
    transformers = pytest.importorskip("transformers")
    import torch

    from tests.serving.served_tokenizer import checkpoint_tokenizer

    tokenizer = checkpoint_tokenizer(checkpoint)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32).eval()

    def decode(ids, beams):
        out = model.generate(torch.tensor([ids]), num_beams=beams, do_sample=False, max_new_tokens=12,
                             eos_token_id=tokenizer.eod, pad_token_id=tokenizer.eod, repetition_penalty=1.0,
                             temperature=None, top_p=None, top_k=None)[0, len(ids):].tolist()
        return tokenizer.detokenize(out[: out.index(tokenizer.eod)] if tokenizer.eod in out else out)

    candidates = [PROMPT, "import os\n", "class Foo:\n    def __init__(self, name):\n        self.", "for i in range(",
                  "x = [", "# ", "def main():\n    ", "return self."]
    prompt, expected = next(((p, decode(tokenizer.tokenize(p), 3)) for p in candidates
                             if decode(tokenizer.tokenize(p), 3) != decode(tokenizer.tokenize(p), 1)), (None, None))
    assert prompt is not None, "no candidate prompt where beam search differs from greedy decoding"
    served = _client(server_url).completions.create(model=SERVED_NAME, prompt=prompt, max_tokens=12,
                                                    extra_body={"num_beams": 3})
    assert served.choices[0].text == expected
