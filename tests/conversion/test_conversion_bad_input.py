"""Conversion refuses what it cannot convert exactly, naming the file or tensor; it never clobbers outputs."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch

from megatron_sota.conversion.cli import main as convert

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=100, tie_word_embeddings=False)
    path = str(tmp_path_factory.mktemp("hf") / "small")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


def _copy(small_hf, tmp_path, name="model") -> str:
    target = str(tmp_path / name)
    shutil.copytree(small_hf, target)
    return target


def _edit_config(path: str, **changes) -> None:
    config_path = os.path.join(path, "config.json")
    config = json.load(open(config_path))
    config.update(changes)
    json.dump(config, open(config_path, "w"))


def _edit_weights(path: str, edit) -> None:
    weights_path = os.path.join(path, "model.safetensors")
    tensors = load_file(weights_path)
    edit(tensors)
    save_file(tensors, weights_path, metadata={"format": "pt"})


def _import_error(path: str, tmp_path, capsys) -> str:
    target = str(tmp_path / "ckpt")
    assert convert(["import", "--load", path, "--save", target]) == 1
    assert not os.path.exists(target) and not os.path.exists(target + ".partial")
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "mistral"}, r"config.json: model_type='mistral', expected 'llama'"),
        ({"attention_bias": True}, r"attention_bias=True, expected false"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu', expected 'silu'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "rope_parameters": None}, r"rope scaling .*yarn.* is not supported"),
        ({"intermediate_size": 96}, r"model.layers.0.mlp.gate_proj.weight: expected shape \[96, 32\] from config.json, found \[64, 32\]"),
    ],
)
def test_import_refuses_configs_it_cannot_convert_exactly(small_hf, tmp_path, capsys, changes, message):
    path = _copy(small_hf, tmp_path)
    _edit_config(path, **changes)
    assert re.search(message, _import_error(path, tmp_path, capsys))


def test_import_names_bias_and_missing_lm_head_tensors(small_hf, tmp_path, capsys):
    path = _copy(small_hf, tmp_path)

    def edit(tensors):
        tensors["model.layers.1.self_attn.q_proj.bias"] = torch.zeros(32)
        del tensors["lm_head.weight"]

    _edit_weights(path, edit)
    err = _import_error(path, tmp_path, capsys)
    assert "model.layers.1.self_attn.q_proj.bias: unexpected tensor (a bias; models here have none)" in err
    assert "lm_head.weight: missing from the weights" in err and "tie_word_embeddings=false" in err


def test_import_names_a_missing_shard_and_a_missing_config(small_hf, tmp_path, capsys):
    path = str(tmp_path / "sharded")
    transformers.LlamaForCausalLM.from_pretrained(small_hf).save_pretrained(path, max_shard_size="20KB")
    shards = sorted(n for n in os.listdir(path) if n.startswith("model-"))
    os.remove(os.path.join(path, shards[-1]))
    assert f"names {shards[-1]}" in _import_error(path, tmp_path, capsys)
    os.remove(os.path.join(path, "config.json"))
    assert "config.json is missing: expected a Hugging Face model directory" in _import_error(path, tmp_path, capsys)


def test_import_refuses_a_layout_that_does_not_divide_the_model(small_hf, tmp_path, capsys):
    target = str(tmp_path / "ckpt")
    assert convert(["import", "--load", small_hf, "--save", target, "--tp", "4"]) == 1
    assert "--tp 4 must divide num_attention_heads=4 and num_key_value_heads=2" in capsys.readouterr().err


@pytest.mark.slow
def test_export_never_overwrites_without_overwrite_and_refuses_non_checkpoints(small_hf, tmp_path, capsys):
    checkpoint = str(tmp_path / "ckpt")
    assert convert(["import", "--load", small_hf, "--save", checkpoint]) == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert convert(["export", "--load", checkpoint, "--save", str(out)]) == 1
    assert "directory exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"]
    assert convert(["export", "--load", checkpoint, "--save", str(out), "--overwrite"]) == 0
    assert "keep.txt" not in os.listdir(out) and "model.safetensors" in os.listdir(out)
    assert not os.path.exists(str(out) + ".partial") and not os.path.exists(str(out) + ".replaced")

    assert convert(["export", "--load", small_hf, "--save", str(tmp_path / "x")]) == 1
    assert "not a checkpoint (expected" in capsys.readouterr().err
    os.remove(os.path.join(checkpoint, "iter_0000000", ".metadata"))
    assert convert(["export", "--load", checkpoint, "--save", str(tmp_path / "y")]) == 1
    assert ".metadata is missing" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y") and not os.path.exists(str(tmp_path / "y") + ".partial")
