"""A LlamaForCausalLM built by transformers: import to megatron_sota at TP/PP layouts, export back, compare.

The reference is transformers itself: its tensors (round trip must be bit-exact) and its forward.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from megatron_sota.conversion.cli import main as convert
from megatron_sota.runtime.local_ranks import run_distributed
from tests.conversion.probes import greedy_probe, logits_probe

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

pytestmark = pytest.mark.slow

VOCAB = 300  # not a multiple of 128: the embedding is padded inside megatron_sota
# Llama 3 RoPE scaling (megatron-core's constants) so that rope_scaling is converted and checked too.
ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


def _hf_weights(directory: str) -> dict:
    tensors = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(directory, name)))
    return tensors


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """8 query heads in 2 KV groups (4 per group), 4 layers, untied, written as 3+ safetensors shards."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=16384, rope_theta=50000.0, rope_scaling=ROPE_SCALING,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=None, eos_token_id=VOCAB - 1, pad_token_id=None,
    )
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # transformers initialises norms to 1; random ones catch a swapped norm
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    path = str(tmp_path_factory.mktemp("hf") / "llama_gqa")
    model.save_pretrained(path, max_shard_size="60KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    return path, model


@pytest.fixture(scope="module")
def imported(hf_model, tmp_path_factory):
    """The HF model imported at TP=2, PP=2 (4 gloo ranks)."""
    path, _ = hf_model
    out = str(tmp_path_factory.mktemp("imported") / "ckpt")
    assert convert(["import", "--load", path, "--save", out, "--tp", "2", "--pp", "2"]) == 0
    return out


@pytest.mark.parametrize("layout", [("1", "1"), ("2", "2")])
def test_import_then_export_reproduces_every_tensor_exactly(hf_model, imported, tmp_path, layout):
    path, _ = hf_model
    if layout == ("2", "2"):
        checkpoint = imported
    else:
        checkpoint = str(tmp_path / "ckpt")
        assert convert(["import", "--load", path, "--save", checkpoint, "--tp", layout[0], "--pp", layout[1]]) == 0
    out = str(tmp_path / "hf_out")
    assert convert(["export", "--load", checkpoint, "--save", out, "--dtype", "fp32", "--max-shard-size", "100KB"]) == 0
    original, exported = _hf_weights(path), _hf_weights(out)
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    assert sorted(index["weight_map"]) == sorted(original)
    config = json.load(open(os.path.join(out, "config.json")))
    source = json.load(open(os.path.join(path, "config.json")))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings"):
        assert config[key] == source[key], key
    assert config["rope_parameters"] == {**ROPE_SCALING, "rope_theta": 50000.0}
    assert json.load(open(os.path.join(out, "generation_config.json")))["eos_token_id"] == VOCAB - 1


def test_imported_checkpoint_computes_what_transformers_computes(hf_model, imported):
    _, model = hf_model
    tokens = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens).logits
    for tp in (1, 2):  # loaded from the TP=2, PP=2 checkpoint, resharded
        ours = run_distributed(logits_probe, tp, imported, tokens, tp)[0]
        assert ours.shape == reference.shape
        assert (ours - reference).abs().max().item() <= 1e-4, tp
    prompt = tokens[:1, :8]
    hf_greedy = model.generate(prompt, do_sample=False, max_new_tokens=12, min_new_tokens=12, repetition_penalty=1.0,
                               top_k=None, top_p=None, temperature=None, pad_token_id=0)[0, 8:].tolist()
    assert run_distributed(greedy_probe, 1, imported, prompt, 12, 1)[0] == hf_greedy


def test_rope_scaling_is_part_of_the_imported_model(hf_model, tmp_path):
    """Mutation guard for the test above: the same weights without RoPE scaling compute other logits."""
    path, model = hf_model
    plain = str(tmp_path / "plain")
    os.makedirs(plain)
    config = json.load(open(os.path.join(path, "config.json")))
    config["rope_scaling"] = config["rope_parameters"] = None
    json.dump(config, open(os.path.join(plain, "config.json"), "w"))
    for name in os.listdir(path):
        if "safetensors" in name:
            os.symlink(os.path.join(path, name), os.path.join(plain, name))
    checkpoint = str(tmp_path / "ckpt")
    assert convert(["import", "--load", plain, "--save", checkpoint]) == 0
    tokens = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens).logits
    assert (run_distributed(logits_probe, 1, checkpoint, tokens, 1)[0] - reference).abs().max().item() > 1e-3


def test_tied_embeddings_round_trip_through_a_pipeline_split(tmp_path):
    """Tied input/output embeddings: the last pipeline stage's output layer shares the first stage's weights."""
    torch.manual_seed(2)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=4, vocab_size=VOCAB, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(config).float().eval()
    source, checkpoint, out = str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "out")
    model.save_pretrained(source)
    assert "lm_head.weight" not in load_file(os.path.join(source, "model.safetensors"))
    assert convert(["import", "--load", source, "--save", checkpoint, "--pp", "2"]) == 0
    assert convert(["export", "--load", checkpoint, "--save", out, "--dtype", "fp32"]) == 0
    original, exported = _hf_weights(source), _hf_weights(out)
    assert sorted(exported) == sorted(original) and all(torch.equal(exported[n], t) for n, t in original.items())
    assert json.load(open(os.path.join(out, "config.json")))["tie_word_embeddings"] is True
    tokens = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(tokens).logits
    assert (run_distributed(logits_probe, 1, checkpoint, tokens, 1)[0] - reference).abs().max().item() <= 1e-4


def test_training_starts_from_an_imported_checkpoint_and_a_requeue_resumes_its_own(hf_model, imported, tmp_path):
    """checkpoint.init_from loads the weights at step 0 (lr=0 keeps them, so the saved weights export
    to the original tensors); a second start of the same run resumes its own checkpoint instead."""
    from megatron_sota.config.job import JobConfig
    from megatron_sota.conversion.hf_config import model_from_hf_config, read_hf_config
    from tests.distributed.probes import pretrain_probe

    path, _ = hf_model
    job = JobConfig()
    job.model = model_from_hf_config(read_hf_config(path), "config.json", "llama_gqa")
    job.data.mock = True
    job.data.num_workers = 0
    job.train.iters, job.train.seq_length, job.train.eval_interval = 1, 32, 0
    job.train.global_batch_size, job.train.micro_batch_size = 2, 1
    job.optimizer.lr = 0.0
    # A schedule that does not depend on train.iters, which the second start raises.
    job.scheduler.warmup_iters, job.scheduler.decay_iters = 0, 10
    job.runtime.device = "cpu"
    job.logging.tensorboard = False
    job.checkpoint.init_from = imported
    run_dir = str(tmp_path / "run")
    first = run_distributed(pretrain_probe, 1, job, run_dir)[0]
    assert first["first_step"] == 1 and len(first["losses"]) == 1
    out = str(tmp_path / "hf")
    assert convert(["export", "--load", os.path.join(run_dir, "checkpoints"), "--save", out, "--dtype", "fp32"]) == 0
    original, exported = _hf_weights(path), _hf_weights(out)
    assert all(torch.equal(exported[n], t) for n, t in original.items())
    job.train.iters = 2
    second = run_distributed(pretrain_probe, 1, job, run_dir)[0]
    assert second["first_step"] == 2 and len(second["losses"]) == 1
