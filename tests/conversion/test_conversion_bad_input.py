"""Conversion refuses what it cannot convert exactly, naming the file or tensor; it never clobbers outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

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
    with open(config_path) as handle:
        config = json.load(handle)
    config.update(changes)
    with open(config_path, "w") as handle:
        json.dump(config, handle)


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


def _damage(path: str, how: str) -> tuple[int, int]:
    """Damages a safetensors file; returns (its header length, bytes of tensor data it had)."""
    with open(path, "rb") as handle:
        data = handle.read()
    (length,) = struct.unpack("<Q", data[:8])
    if how == "truncated":
        data = data[: len(data) - 100]
    elif how == "extra bytes":
        data = data + bytes(100)
    elif how == "header length":
        data = struct.pack("<Q", 10**12) + data[8:]
    else:  # a header whose JSON is damaged
        data = data[:8] + b"#" + data[9:]
    with open(path, "wb") as handle:
        handle.write(data)
    return length, os.path.getsize(path) + {"truncated": 100, "extra bytes": -100}.get(how, 0) - 8 - length


@pytest.mark.parametrize("how", ["truncated", "extra bytes", "header length", "header json"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_import_names_a_truncated_or_damaged_safetensors_file(small_hf, tmp_path, capsys, how, sharded):
    path = str(tmp_path / "model")
    if sharded:
        transformers.LlamaForCausalLM.from_pretrained(small_hf).save_pretrained(path, max_shard_size="20KB")
        name = sorted(n for n in os.listdir(path) if n.startswith("model-"))[-1]
    else:
        path, name = _copy(small_hf, tmp_path), "model.safetensors"
    file = os.path.join(path, name)
    length, data_bytes = _damage(file, how)
    found = {
        "truncated": f"{file}: expected {data_bytes:,} bytes of tensor data (as its header says), found "
                     f"{data_bytes - 100:,}; the file is truncated (an interrupted download or copy?); download or copy it again",
        "extra bytes": f"{file}: expected {data_bytes:,} bytes of tensor data (as its header says), found "
                       f"{data_bytes + 100:,}; the file is damaged; download or copy it again",
        "header length": f"{file}: expected a header length (its first 8 bytes) that fits in the file, found a header of "
                         f"1,000,000,000,000 bytes in a file of {os.path.getsize(file):,}; the file is truncated or damaged",
        "header json": f"{file}: expected a JSON header of {length:,} bytes listing each tensor's data_offsets, found one "
                       f"that does not parse (JSONDecodeError: ",
    }[how]
    err = _import_error(path, tmp_path, capsys)
    assert found in err and "Traceback" not in err, err


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
