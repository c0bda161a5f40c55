"""Fused megatron-core tensors <-> Hugging Face Llama tensors, and the streaming safetensors writer."""

from __future__ import annotations

import json
import os

import pytest
import torch

from megatron_sota.config.model import ModelConfig
from megatron_sota.conversion import llama_mapping as names
from megatron_sota.conversion.safetensors_files import SafetensorsDirectory, StreamingSafetensorsWriter, parse_size
from megatron_sota.errors import MegatronSotaError

safetensors = pytest.importorskip("safetensors")


def _model(heads=8, groups=2, hidden=32, ffn=48, layers=2) -> ModelConfig:
    return ModelConfig(num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn, num_attention_heads=heads, num_query_groups=groups)


def test_split_qkv_takes_each_groups_queries_then_its_key_and_value():
    model = _model()
    shape = names.AttentionShape.of(model)
    d, per_group = model.head_dim, model.num_attention_heads // model.num_query_groups
    # Row r of the fused tensor holds the value r in every column, so each split row says where it came from.
    fused = torch.arange(model.num_query_groups * (per_group + 2) * d, dtype=torch.float32)[:, None].expand(-1, 32).clone()
    q, k, v = names.split_qkv(fused, shape)
    for head in range(model.num_attention_heads):
        group, within = divmod(head, per_group)
        start = group * (per_group + 2) * d + within * d
        assert torch.equal(q[head * d : (head + 1) * d, 0], torch.arange(start, start + d, dtype=torch.float32))
    for group in range(model.num_query_groups):
        key_start = group * (per_group + 2) * d + per_group * d
        assert torch.equal(k[group * d : (group + 1) * d, 0], torch.arange(key_start, key_start + d, dtype=torch.float32))
        assert torch.equal(v[group * d : (group + 1) * d, 0], torch.arange(key_start + d, key_start + 2 * d, dtype=torch.float32))
    assert torch.equal(names.merge_qkv(q, k, v, shape), fused)


def test_fc1_is_gate_then_up_and_vocab_padding_round_trips():
    gate, up = torch.randn(48, 32), torch.randn(48, 32)
    fused = names.merge_fc1(gate, up, 48, 32)
    assert torch.equal(fused[:48], gate) and torch.equal(names.split_fc1(fused, 48, 32)[1], up)
    embedding = torch.randn(300, 32)
    padded = names.pad_vocab(embedding, 384)
    assert padded.shape == (384, 32) and torch.count_nonzero(padded[300:]) == 0
    assert torch.equal(names.unpad_vocab(padded, 300), embedding)


def test_layer_conversion_is_exact_both_ways_and_checks_shapes():
    model = _model()
    hf = {name: torch.randn(shape) for name, shape in names.hf_shapes(model, 100).items()}
    layer1 = {n: t for n, t in hf.items() if n.startswith("model.layers.1.")}
    assert all(torch.equal(t, layer1[n]) for n, t in names.layer_to_hf(names.layer_from_hf(layer1, model, 1), model, 1).items())
    layer1["model.layers.1.mlp.down_proj.weight"] = torch.randn(32, 47)
    with pytest.raises(MegatronSotaError, match=r"down_proj.weight: expected shape \[32, 48\], found \[32, 47\]"):
        names.layer_from_hf(layer1, model, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streaming_writer_writes_files_safetensors_reads_back(tmp_path, dtype):
    from safetensors.torch import load_file

    shapes = {"a": (10, 7), "b": (3,), "c": (5, 5), "d": (20, 2)}
    tensors = {name: torch.randn(shape) for name, shape in shapes.items()}
    writer = StreamingSafetensorsWriter(str(tmp_path), shapes, dtype, max_shard_bytes=50 * dtype.itemsize)  # a alone (over the limit), b+c, d
    for name in ["d", "b", "a", "c"]:  # any order: each tensor goes to its planned place
        writer.write(name, tensors[name])
    files = writer.finish()
    assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    assert index["metadata"]["total_size"] == sum(t.numel() for t in tensors.values()) * dtype.itemsize
    loaded = {}
    for name in files[:-1]:
        loaded.update(load_file(str(tmp_path / name)))
    assert {n: index["weight_map"][n] for n in shapes} == {"a": files[0], "b": files[1], "c": files[1], "d": files[2]}
    for name, tensor in tensors.items():
        assert loaded[name].dtype == dtype and torch.equal(loaded[name], tensor.to(dtype))
    reader = SafetensorsDirectory(str(tmp_path))
    assert torch.equal(reader.get("c"), tensors["c"].to(dtype)) and reader.shape("d") == (20, 2)


def test_writer_refuses_wrong_shape_and_incomplete_plans(tmp_path):
    writer = StreamingSafetensorsWriter(str(tmp_path), {"a": (2, 2), "b": (3,)}, torch.float32, 10**6)
    with pytest.raises(MegatronSotaError, match=r"a: expected shape \[2, 2\], found \[4\]"):
        writer.write("a", torch.zeros(4))
    writer.write("a", torch.zeros(2, 2))
    with pytest.raises(MegatronSotaError, match="1 tensors never written"):
        writer.finish()


def test_reader_names_a_missing_shard(tmp_path):
    writer = StreamingSafetensorsWriter(str(tmp_path), {"a": (4,), "b": (4,)}, torch.float32, 16)
    writer.write("a", torch.zeros(4))
    writer.write("b", torch.ones(4))
    writer.finish()
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(MegatronSotaError, match=r"names model-00002-of-00002.safetensors \(holding b"):
        SafetensorsDirectory(str(tmp_path))


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("1.5MB") == 1_500_000
    assert parse_size("123") == 123
    with pytest.raises(MegatronSotaError, match="expected a size"):
        parse_size("five")
