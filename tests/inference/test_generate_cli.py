"""tools/generate.py end to end: JSONL in and out in batches, the completion of the library's greedy decoding, overflow, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.local_ranks import run_distributed
from tests.inference.probes import Request, generate_probe

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "generate.py")
GREEDY_FLAGS = ["--temperature", "0", "--repetition-penalty", "1.0"]


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prompt_file_in_batches_completes_each_prompt_as_the_library_does_alone(checkpoint, stdlib_shards, tmp_path):
    """Three prompts of different lengths, --batch-size 2: a left-padded batch of two, then one alone.

    Each completion must equal the library's greedy decoding of that prompt alone, which is
    what --batch-size 1 runs (one prompt per generate call), so batching changes no completion.
    """
    from megatron_sota.data.tokenizer import build_tokenizer

    prompts = tmp_path / "prompts.jsonl"
    texts = ["def parse(self, text):\n    return", "import os\n", "class Foo:\n    def __init__(self, name):\n        self."]
    prompts.write_text("".join(json.dumps({"prompt": t, "id": f"p{i}"}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.jsonl"
    result = _generate("--load", checkpoint, "--prompt-file", str(prompts), "--output", str(out), "--max-new-tokens", "12", "--batch-size", "2", *GREEDY_FLAGS)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2"] and not list(tmp_path.glob("*.partial"))  # no temporary left
    assert records[0]["seconds"] == records[1]["seconds"]  # one batch, one time
    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    ids = [tokenizer.tokenize(text) for text in texts]
    assert len({len(i) for i in ids}) == 3
    greedy = SamplingSettings(temperature=0.0, repetition_penalty=1.0)
    alone = [Request(12, greedy, stop_ids=(tokenizer.eod,), prompts=[row]) for row in ids]
    library = run_distributed(generate_probe, 1, checkpoint, None, alone)[0]
    for row, record, generated in zip(ids, records, library):
        tokens = generated["tokens"][0]
        assert record["prompt_tokens"] == len(row) and record["prompt_tokens_dropped"] == 0
        assert record["completion_tokens"] == len(tokens)
        assert record["completion"] == tokenizer.detokenize([t for t in tokens if t != tokenizer.eod])


class _SpecialTokenizer:
    """Reads "<eod>" as end-of-document (as Hugging Face tokenizers read "<|endoftext|>"), other words as id 7."""

    eod = 0
    pad = 0

    @property
    def bos(self):
        raise NotImplementedError

    def tokenize(self, text):
        return [self.eod if word == "<eod>" else 7 for word in text.split()]


def test_prompts_without_text_tokens_are_refused_by_id():
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.inference.prompts import prompt_ids
    from megatron_sota.inference.prompts import Prompt

    with pytest.raises(MegatronSotaError, match=r"prompt q7: expected text to continue, found only special tokens \[0, 0\]"):
        prompt_ids(_SpecialTokenizer(), Prompt("q7", "<eod> <eod>"), 100, "keep_end")
    with pytest.raises(MegatronSotaError, match="prompt 3: expected text that tokenizes to at least one token, found none"):
        prompt_ids(_SpecialTokenizer(), Prompt(3, "  "), 100, "keep_end")
    assert prompt_ids(_SpecialTokenizer(), Prompt(4, "<eod> text"), 100, "keep_end") == ([0, 7], 0)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1, got -5"),
        (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
        (["--top-p", "5"], "--top-p must be in (0, 1], got 5.0"),
        (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--top-k", "-1"], "--top-k must be >= 0, got -1"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be > 0, got 0.0"),
        (["--temperature", "nan"], "--temperature must be finite and >= 0, got nan"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--stop-id", "-1"], "--stop-id must be >= 0, got -1"),
    ],
)
def test_out_of_range_flags_are_usage_errors_before_any_checkpoint_is_read(flags, expected, capsys):
    """Exit code 2 naming flag, range and value; --load names nothing, so reaching it would fail differently."""
    from megatron_sota.inference.generate_cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--load", "no_such_checkpoint", "--prompt", "x", *flags])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_every_bad_flag_is_named_at_once(capsys):
    from megatron_sota.inference.generate_cli import main

    with pytest.raises(SystemExit):
        main(["--load", "unused", "--prompt", "x", "--max-new-tokens", "-5", "--temperature", "-1", "--top-p", "5"])
    err = capsys.readouterr().err
    assert all(flag in err for flag in ("--max-new-tokens must be", "--temperature must be", "--top-p must be")), err


def test_out_of_range_defaults_file_is_named(tmp_path, monkeypatch, capsys):
    from megatron_sota.inference import generate_cli

    defaults = tmp_path / "default.yaml"
    defaults.write_text("top_p: 2.0\n")
    monkeypatch.setattr(generate_cli, "DEFAULTS_FILE", str(defaults))
    with pytest.raises(SystemExit):
        generate_cli.main(["--load", "unused", "--prompt", "x", "--top-p", "0.9"])
    assert f"{defaults}: generation.top_p must be in (0, 1], got 2.0" in capsys.readouterr().err


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_prompt_files_name_file_line_and_field(checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    out = tmp_path / "out.jsonl"
    result = _generate("--load", checkpoint, "--prompt-file", str(bad), "--output", str(out))
    assert result.returncode == 1 and f"{bad}:2: field 'prompt': expected a non-empty string, found no 'prompt' field" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))  # no temporary left
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = _generate("--load", checkpoint, "--prompt-file", str(empty))
    assert result.returncode == 1 and "no prompts (expected JSON lines with a 'prompt' field)" in result.stderr
