"""Export of a model trained here (the `tiny` preset on the stdlib corpus, at TP=2, PP=2), checked with transformers.

The in-training export (checkpoint.export_hf_every) and the command-line export of the same
checkpoint must agree byte for byte, and both with an export of the same weights saved at TP=1, PP=1.
"""

from __future__ import annotations

import filecmp
import json
import os

import pytest
import torch

from megatron_sota.conversion.cli import main as convert
from megatron_sota.runtime.local_ranks import run_distributed
from tests.conversion.probes import greedy_probe, logits_probe, resave_probe
from tests.distributed.jobs import stdlib_job
from tests.distributed.probes import pretrain_probe

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


def _weight_files(directory: str) -> list:
    return sorted(n for n in os.listdir(directory) if "safetensors" in n)


@pytest.fixture(scope="module")
def trained(stdlib_shards, tmp_path_factory):
    """tiny trained 2 steps at TP=2, PP=2 with an fp32 in-training export at the end."""
    run_dir = str(tmp_path_factory.mktemp("trained"))
    job = stdlib_job(stdlib_shards, tp=2, pp=2)
    job.train.iters = 2
    job.checkpoint.export_hf_every = 2
    job.checkpoint.export_hf_dtype = "fp32"
    run_distributed(pretrain_probe, 4, job, run_dir)
    return os.path.join(run_dir, "checkpoints")


def test_in_training_export_matches_the_command_line_and_a_tp1_pp1_copy(trained, tmp_path):
    in_training = os.path.join(trained, "hf", "iter_0000002")
    cli = str(tmp_path / "cli")
    assert convert(["export", "--load", trained, "--save", cli, "--dtype", "fp32"]) == 0
    resaved = str(tmp_path / "tp1")
    run_distributed(resave_probe, 1, os.path.join(trained, "iter_0000002"), resaved)
    from_tp1 = str(tmp_path / "from_tp1")
    assert convert(["export", "--load", resaved, "--save", from_tp1, "--dtype", "fp32"]) == 0
    files = _weight_files(cli)
    assert files == ["model.safetensors"]
    for other in (in_training, from_tp1):
        assert _weight_files(other) == files
        assert all(filecmp.cmp(os.path.join(cli, f), os.path.join(other, f), shallow=False) for f in files), other


def test_exported_tiny_gives_the_logits_and_greedy_text_of_the_checkpoint(trained, stdlib_shards, tmp_path):
    out = str(tmp_path / "hf")
    assert convert(["export", "--load", trained, "--save", out, "--dtype", "fp32"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["vocab_size"], config["num_key_value_heads"], config["tie_word_embeddings"]) == (1900, 2, False)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    from megatron_sota.data.tokenizer import build_tokenizer

    ours_tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    ids = ours_tokenizer.tokenize(text)
    assert tokenizer.encode(text) == ids
    tokens = torch.tensor([ids, ids[::-1]])
    with torch.no_grad():
        reference = model(tokens).logits
    ours = run_distributed(logits_probe, 1, trained, tokens, 1)[0]
    assert (ours - reference).abs().max().item() <= 1e-4
    prompt = tokens[:1, :10]
    hf_greedy = model.generate(prompt, do_sample=False, max_new_tokens=16, min_new_tokens=16, repetition_penalty=1.0,
                               top_k=None, top_p=None, temperature=None)[0, 10:].tolist()
    assert run_distributed(greedy_probe, 1, trained, prompt, 16, 1)[0] == hf_greedy


def test_bf16_export_is_the_fp32_export_rounded(trained, tmp_path):
    from safetensors.torch import load_file

    convert(["export", "--load", trained, "--save", str(tmp_path / "fp32"), "--dtype", "fp32"])
    assert convert(["export", "--load", trained, "--save", str(tmp_path / "bf16")]) == 0
    fp32 = load_file(str(tmp_path / "fp32" / "model.safetensors"))
    bf16 = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(bf16[n].dtype == torch.bfloat16 and torch.equal(bf16[n], t.to(torch.bfloat16)) for n, t in fp32.items())
    assert json.load(open(tmp_path / "bf16" / "config.json"))["torch_dtype"] == "bfloat16"
