"""tools/generate.py end to end: JSONL in and out, the completion of the library's greedy decoding, overflow, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.local_ranks import run_distributed
from tests.inference.probes import Request, generate_probe

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "generate.py")
GREEDY_FLAGS = ["--temperature", "0", "--repetition-penalty", "1.0"]


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)


def test_prompt_file_to_jsonl_completions_equal_the_library_greedy_decoding(checkpoint, stdlib_shards, tmp_path):
    from megatron_sota.data.tokenizer import build_tokenizer

    prompts = tmp_path / "prompts.jsonl"
    texts = ["def parse(self, text):\n    return", "import os\n"]
    prompts.write_text("".join(json.dumps({"prompt": t, "id": f"p{i}"}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.jsonl"
    result = _generate("--load", checkpoint, "--prompt-file", str(prompts), "--output", str(out), "--max-new-tokens", "12", *GREEDY_FLAGS)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1"] and not os.path.exists(str(out) + ".partial")
    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    for text, record in zip(texts, records):
        ids = tokenizer.tokenize(text)
        assert record["prompt_tokens"] == len(ids) and record["prompt_tokens_dropped"] == 0
        greedy = SamplingSettings(temperature=0.0, repetition_penalty=1.0)
        tokens = run_distributed(generate_probe, 1, checkpoint, torch.tensor([ids]), [Request(12, greedy, stop_ids=(tokenizer.eod,))])[0][0]["tokens"][0]
        assert record["completion_tokens"] == len(tokens)
        assert record["completion"] == tokenizer.detokenize([t for t in tokens if t != tokenizer.eod])


def test_overflowing_prompt_is_cut_by_policy_or_refused(checkpoint, tmp_path):
    long_prompt = open(os.path.join(os.path.dirname(json.__file__), "decoder.py")).read() * 3  # > 4096 tokens
    out = tmp_path / "out.jsonl"
    result = _generate("--load", checkpoint, "--prompt", long_prompt, "--max-new-tokens", "4", "--output", str(out), *GREEDY_FLAGS)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["prompt_tokens"] == 4095 and record["prompt_tokens_dropped"] > 0 and record["completion_tokens"] == 1
    assert "tokens dropped (keep_end)" in result.stderr
    refused = _generate("--load", checkpoint, "--prompt", long_prompt, "--overflow", "error")
    assert refused.returncode == 1 and "more than the 4095 that fit in the model's context" in refused.stderr


def test_bad_prompt_files_name_file_line_and_field(checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    out = tmp_path / "out.jsonl"
    result = _generate("--load", checkpoint, "--prompt-file", str(bad), "--output", str(out))
    assert result.returncode == 1 and f"{bad}:2: field 'prompt': expected a non-empty string, found no 'prompt' field" in result.stderr
    assert not out.exists() and not os.path.exists(str(out) + ".partial")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = _generate("--load", checkpoint, "--prompt-file", str(empty))
    assert result.returncode == 1 and "no prompts (expected JSON lines with a 'prompt' field)" in result.stderr
