"""The ONNX export of the trained tiny model's Hugging Face export, run in onnxruntime on CPU against transformers.

The onnxruntime loop here feeds the graph by hand (names from onnx_io.json), independent of onnx_verify.py, whose
numbers it must reproduce.
"""

from __future__ import annotations

import contextlib
from io import StringIO
import json
import os

import numpy as np
import pytest
import torch

from megatron_sota.cli.export_onnx import main as export_onnx_cli

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
transformers = pytest.importorskip("transformers")

STEPS = 8
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(hf_export, tmp_path_factory):  # only slow tests use it
    """(onnx directory, the command's stdout): the command with its verification on, as a user runs it."""
    out = str(tmp_path_factory.mktemp("onnx") / "tiny")
    printed = StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_onnx_cli(["--hf", hf_export, "--save", out]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def reference(hf_export):
    return transformers.AutoModelForCausalLM.from_pretrained(hf_export, dtype=torch.float32).eval()


def _prompt(hf_export, text: str) -> list[int]:
    return transformers.AutoTokenizer.from_pretrained(hf_export).encode(text)


def _session(onnx_dir):
    with open(os.path.join(onnx_dir, "onnx_io.json")) as handle:
        names = json.load(handle)
    session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "model.onnx"), providers=["CPUExecutionProvider"])
    return session, names


def _run(session, names, ids, mask, positions, past):
    outputs = session.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past})
    named = dict(zip([o.name for o in session.get_outputs()], outputs))
    return named["logits"], {f"past.{name[len('present.'):]}": named[name] for name in names["outputs"][1:]}


def _empty_past(names, batch):
    shape = (batch, names["num_kv_heads"], 0, names["head_dim"])
    return {name: np.zeros(shape, np.float32) for name in names["inputs"][3:]}


@pytest.mark.slow  # the export takes ~30 s on 2 shared cores
def test_onnx_logits_match_transformers_over_prefill_and_cached_greedy_steps(exported, hf_export, reference):
    from megatron_sota.conversion.onnx_verify import verify_onnx

    onnx_dir, printed = exported
    session, names = _session(onnx_dir)
    prompt = _prompt(hf_export, "import os\nimport sys\n\ndef ")
    ids = np.array([prompt], np.int64)
    past = _empty_past(names, 1)
    length = len(prompt)
    cache = transformers.DynamicCache(config=reference.config)
    diffs, onnx_tokens, torch_tokens = [], [], []
    with torch.no_grad():
        for _ in range(STEPS + 1):
            start = length - ids.shape[1]
            positions = np.arange(start, length, dtype=np.int64)[None]
            logits, past = _run(session, names, ids, np.ones((1, length), np.int64), positions, past)
            expected = reference(input_ids=torch.from_numpy(ids), cache=cache, use_cache=True).logits.numpy()
            diffs.append(float(np.abs(logits - expected).max()))
            onnx_tokens.append(int(logits[0, -1].argmax()))
            torch_tokens.append(int(expected[0, -1].argmax()))
            ids = np.array([[torch_tokens[-1]]], np.int64)
            length += 1
    assert max(diffs) <= TOLERANCE, diffs
    assert onnx_tokens == torch_tokens
    assert len(set(torch_tokens)) > 1  # a trained model, not one stuck on a token
    assert past["past.0.key"].shape[2] == len(prompt) + STEPS  # the last step's token is not fed back

    checked = verify_onnx(onnx_dir, hf_export, prompt, steps=STEPS)
    assert checked.passed and checked.onnx_tokens == onnx_tokens and checked.torch_tokens == torch_tokens
    assert checked.max_diffs == pytest.approx(diffs, rel=1e-3, abs=1e-9)
    assert "verified: max |logit diff|" in printed and "greedy tokens equal" in printed


@pytest.mark.slow  # the export takes ~30 s on 2 shared cores
def test_left_padded_batch_of_two_matches_each_prompt_alone(exported, hf_export, reference):
    """attention_mask 0 marks left padding; position_ids count real tokens only (as transformers' generate does)."""
    session, names = _session(exported[0])
    prompts = [_prompt(hf_export, "def main():\n    return"), _prompt(hf_export, "x = 1")]
    width = max(map(len, prompts))
    assert len(prompts[1]) < width
    ids = np.array([[0] * (width - len(p)) + p for p in prompts], np.int64)
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts], np.int64)
    positions = np.clip(mask.cumsum(1) - 1, 0, None)
    past = _empty_past(names, 2)
    rows = [[] for _ in prompts]
    for _ in range(3):  # the prefill and two cached steps
        logits, past = _run(session, names, ids, mask, positions, past)
        for row in range(2):
            rows[row].append(logits[row, -1])
        ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    with torch.no_grad():
        for row, prompt in enumerate(prompts):
            sequence = prompt + [int(r.argmax()) for r in rows[row][:-1]]
            alone = reference(input_ids=torch.tensor([sequence])).logits[0, -3:].numpy()
            assert np.abs(np.stack(rows[row]) - alone).max() <= TOLERANCE


@pytest.mark.slow  # the export takes ~30 s on 2 shared cores
def test_weights_are_external_data_that_loads_with_the_tokenizer_and_cache_description(exported, hf_export):
    onnx_dir = exported[0]
    graph, weights = os.path.join(onnx_dir, "model.onnx"), os.path.join(onnx_dir, "model.onnx.data")
    parameters = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(hf_export).parameters())
    assert os.path.getsize(weights) >= 4 * parameters * 0.99  # fp32 weights, in the data file
    assert os.path.getsize(graph) < os.path.getsize(weights) / 4
    onnx.checker.check_model(graph, full_check=True)
    model = onnx.load(graph)  # follows the external data reference
    assert sum(np.prod(t.dims) for t in model.graph.initializer) >= parameters
    with open(os.path.join(hf_export, "config.json")) as handle:
        config = json.load(handle)
    with open(os.path.join(onnx_dir, "onnx_io.json")) as handle:
        names = json.load(handle)
    assert (names["num_layers"], names["num_kv_heads"]) == (config["num_hidden_layers"], config["num_key_value_heads"])
    assert names["inputs"] == [i.name for i in model.graph.input] and names["outputs"] == [o.name for o in model.graph.output]
    text = "for i in range(10):"
    tokenizer = transformers.AutoTokenizer.from_pretrained(onnx_dir)
    assert tokenizer.encode(text) == transformers.AutoTokenizer.from_pretrained(hf_export).encode(text)


def test_refuses_a_source_that_is_not_a_hugging_face_llama_export(checkpoint, tmp_path, capsys):
    target = str(tmp_path / "onnx")
    assert export_onnx_cli(["--hf", checkpoint, "--save", target]) == 1
    assert f"--hf {os.path.join(checkpoint, 'config.json')} is missing" in capsys.readouterr().err
    assert not os.path.exists(target) and not os.path.exists(target + ".partial")


def test_refuses_an_existing_save_directory_without_overwrite(hf_export, tmp_path, capsys):
    target = tmp_path / "onnx"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert export_onnx_cli(["--hf", hf_export, "--save", str(target), "--no-verify"]) == 1
    assert "directory exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert os.listdir(target) == ["keep.txt"]
