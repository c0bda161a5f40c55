"""Beam search equals transformers' beam search on the Hugging Face export of the same checkpoint (tokens and
sequence scores); the KV-cache path, whose rows are reordered as beams are reselected, equals recomputation;
one beam is greedy decoding; tools/generate.py --num-beams prints the best hypothesis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.beam_search import beam_search
from megatron_sota.runtime.local_ranks import run_distributed
from tests.inference.beam_probes import BeamRequest, GreedyRequest, beam_probe

NEWLINE, INDENT = 14, 262
"""The SentencePiece ids of "\\n" and of eight spaces: the tiny model's most frequent tokens, so stop ids that
end hypotheses at different lengths while other beams run on to the budget."""

TEXTS = ("def parse(self, text):\n    return self.parser.parse(text)\n", "import os\nimport sys\n\nclass Foo:\n",
         "    if x is None:\n        raise ValueError(")


@pytest.fixture(scope="module")
def cases(checkpoint, hf_export):
    """(requests, our results): beam requests [0-5] are compared with transformers; [6] is [1] recomputed, [7] one
    beam and [8] greedy generation of the same prompt."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_export)
    a, b, c = (tokenizer.encode(text)[:n] for text, n in zip(TEXTS, (8, 5, 9)))
    requests = [
        BeamRequest(a, 2, 10, [NEWLINE], length_penalty=2.0, early_stopping="never", num_return_sequences=2),
        BeamRequest(b, 4, 10, [INDENT], length_penalty=2.0, num_return_sequences=4),
        BeamRequest(c, 4, 11, [NEWLINE], length_penalty=-0.5, early_stopping="never", num_return_sequences=3),
        BeamRequest(a, 3, 10, [INDENT], length_penalty=2.0, early_stopping=True, num_return_sequences=3),
        BeamRequest(c, 4, 10, [INDENT], num_return_sequences=4),
        # Two stop ids: 3 * 4 candidates, stop ids among the spares (which must not become hypotheses).
        BeamRequest(b, 4, 10, [NEWLINE, INDENT], length_penalty=0.0, num_return_sequences=4),
    ]
    requests.append(BeamRequest(**{**requests[1].__dict__, "use_cache": False}))
    requests += [BeamRequest(c, 1, 12, [NEWLINE], length_penalty=2.0, early_stopping="never"), GreedyRequest(c, 12, [NEWLINE])]
    return requests, run_distributed(beam_probe, 1, checkpoint, requests)[0]


def _transformers_beams(model, r: BeamRequest) -> tuple:
    """(new tokens per returned hypothesis, each cut after its stop id, sequence scores) of transformers' beam search;
    repetition penalty and the sampling settings of the export's generation_config.json switched off."""
    out = model.generate(
        torch.tensor([list(r.prompt)]), num_beams=r.num_beams, do_sample=False, max_new_tokens=r.max_new_tokens,
        length_penalty=r.length_penalty, early_stopping=r.early_stopping, num_return_sequences=r.num_return_sequences,
        eos_token_id=list(r.stop_ids), repetition_penalty=1.0, top_k=None, top_p=None, temperature=None,
        return_dict_in_generate=True, output_scores=True,
    )
    rows = out.sequences[:, len(r.prompt):].tolist()  # shorter hypotheses are padded: cut at their stop id
    cut = [next((i + 1 for i, t in enumerate(row) if t in r.stop_ids), len(row)) for row in rows]
    return [row[:n] for row, n in zip(rows, cut)], out.sequences_scores.tolist()


def test_beam_search_equals_transformers_beam_search_on_the_export(hf_export, cases):
    import transformers

    requests, ours = cases
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32).eval()
    for number, (request, result) in enumerate(zip(requests[:6], ours[:6])):
        sequences, scores = _transformers_beams(model, request)
        assert result["sequences"] == sequences, number
        assert len(result["scores"]) == request.num_return_sequences
        assert max(abs(a - b) for a, b in zip(result["scores"], scores)) <= 1e-4, number
        assert result["stop_reasons"] == ["stop_id" if s[-1] in request.stop_ids else "length" for s in sequences]
    # Kept hypotheses ended by a stop id compete with those that ran to the budget, and hypotheses of different
    # lengths with each other (their order is the length-normalised one).
    assert set(ours[1]["stop_reasons"]) == {"stop_id", "length"}
    assert len({len(s) for s in ours[4]["sequences"]}) > 1


def test_cached_beam_search_equals_recomputed(cases):
    requests, ours = cases
    cached, recomputed = ours[1], ours[6]
    assert cached["sequences"] == recomputed["sequences"] and cached["stop_reasons"] == recomputed["stop_reasons"]
    assert max(abs(a - b) for a, b in zip(cached["scores"], recomputed["scores"])) <= 1e-5
    # Four distinct hypotheses of ten tokens: beams were reselected on the way (a stale cache row changes them).
    assert len({tuple(s) for s in cached["sequences"]}) == 4 and {len(s) for s in cached["sequences"]} == {10}


def test_one_beam_is_greedy_generation(cases):
    requests, ours = cases
    one_beam, greedy = ours[7], ours[8]
    assert one_beam["sequences"] == greedy["sequences"] and one_beam["stop_reasons"] == greedy["stop_reasons"]


def test_bad_arguments_are_named_at_once():
    model = SimpleNamespace(job=SimpleNamespace(model=SimpleNamespace(max_position_embeddings=16)))
    with pytest.raises(MegatronSotaError) as err:
        beam_search(model, [1] * 10, 0, 7, early_stopping="sometimes", num_return_sequences=2)
    for expected in ("num_beams: expected >= 1, found 0", "10 tokens + max_new_tokens=7 exceed", "early_stopping", "num_return_sequences"):
        assert expected in str(err.value)


@pytest.mark.slow
def test_generate_cli_num_beams_prints_transformers_best_hypothesis(checkpoint, hf_export, stdlib_shards, tmp_path):
    import transformers

    from megatron_sota.data.tokenizer import build_tokenizer

    text, out = "class Foo:\n    def __init__(self, name):\n        self.", tmp_path / "out.jsonl"
    tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "generate.py")
    flags = ["--num-beams", "3", "--stop-id", str(NEWLINE), "--max-new-tokens", "8", "--output", str(out)]
    result = subprocess.run([sys.executable, tool, "--load", checkpoint, "--prompt", text, *flags], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32).eval()
    request = BeamRequest(tokenizer.tokenize(text), 3, 8, [tokenizer.eod, NEWLINE])
    (best,), _ = _transformers_beams(model, request)
    assert record["completion_tokens"] == len(best) and record["stop_reason"] == ("stop_id" if best[-1] == NEWLINE else "length")
    assert record["completion"] == tokenizer.detokenize(best[:-1] if best[-1] == NEWLINE else best)


def test_generate_cli_refuses_num_beams_below_one(capsys):
    from megatron_sota.inference.generate_cli import parse_args

    with pytest.raises(SystemExit) as exit_code:
        parse_args(["--load", "ckpt", "--prompt", "x", "--num-beams", "0"])
    assert exit_code.value.code == 2 and "--num-beams must be >= 1, got 0" in capsys.readouterr().err


def test_export_writes_num_beams_only_when_the_run_asks_for_beam_search():
    import transformers

    from megatron_sota.config.job import JobConfig
    from megatron_sota.conversion.export import _generation_config

    job = JobConfig()
    sampled = _generation_config(job, {"eos_token_id": 2})
    assert "num_beams" not in sampled and sampled["do_sample"] is True  # exports of other runs are unchanged
    job.generation.num_beams = 4
    beams = _generation_config(job, {"eos_token_id": 2})
    assert {**beams, "num_beams": None, "do_sample": True} == {**sampled, "num_beams": None}
    loaded = transformers.GenerationConfig(**beams)  # what generate() reads from generation_config.json
    assert (loaded.num_beams, loaded.do_sample) == (4, False)
