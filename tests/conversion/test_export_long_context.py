"""A model trained here with a non-default RoPE base and Llama 3 scaling, exported: transformers'
LlamaForCausalLM must compute its logits at positions where the scaling matters.

megatron-core's scaling (original context 8,192, low/high frequency factors 1 and 4) changes every
frequency whose wavelength exceeds 2,048 tokens; with head dim 64 and base 50,000 that is 14 of the
32, whose angles at positions of a few hundred differ by tenths of a radian from unscaled RoPE.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.presets import load_model_preset
from megatron_sota.conversion.cli import main as convert
from megatron_sota.runtime.local_ranks import run_distributed
from tests.conversion.probes import logits_probe
from tests.distributed.probes import pretrain_probe

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

ROTARY_BASE, SCALING, CONTEXT = 50_000.0, 4.0, 1024
LENGTH = 768  # tokens compared; the altered configs are compared from position 256 on


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tiny with rotary_base 50,000 and rope_scaling_factor 4, one training step, exported in fp32."""
    job = JobConfig(model=load_model_preset("tiny"))
    job.model.rotary_base, job.model.rope_scaling_factor, job.model.max_position_embeddings = ROTARY_BASE, SCALING, CONTEXT
    # Weights 5x the usual initial scale: attention peaked enough for positions to move the logits.
    job.model.init_method_std = 0.1
    job.data.mock, job.data.num_workers = True, 0
    job.train.iters, job.train.seq_length, job.train.eval_interval = 1, 64, 0
    job.train.global_batch_size, job.train.micro_batch_size = 2, 2
    job.runtime.device, job.logging.tensorboard = "cpu", False
    run_dir = str(tmp_path_factory.mktemp("run"))
    run_distributed(pretrain_probe, 1, job, run_dir)
    checkpoints, out = os.path.join(run_dir, "checkpoints"), str(tmp_path_factory.mktemp("hf") / "tiny_long")
    assert convert(["export", "--load", checkpoints, "--save", out, "--dtype", "fp32"]) == 0
    return checkpoints, out


def _hf_logits(directory: str, tokens: torch.Tensor) -> torch.Tensor:
    model = transformers.LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(tokens).logits


def test_config_json_carries_the_rope_base_scaling_and_context(exported):
    _, out = exported
    config = json.load(open(os.path.join(out, "config.json")))
    scaling = {"rope_type": "llama3", "factor": SCALING, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    assert (config["rope_theta"], config["rope_scaling"], config["max_position_embeddings"]) == (ROTARY_BASE, scaling, CONTEXT)
    assert config["rope_parameters"] == {**scaling, "rope_theta": ROTARY_BASE}
    loaded = transformers.AutoConfig.from_pretrained(out)  # what transformers itself reads back
    assert loaded.max_position_embeddings == CONTEXT


def test_transformers_reproduces_the_logits_at_long_positions(exported, tmp_path):
    checkpoints, out = exported
    tokens = torch.randint(0, 8000, (1, LENGTH), generator=torch.Generator().manual_seed(4))
    ours = run_distributed(logits_probe, 1, checkpoints, tokens, 1)[0]
    reference = _hf_logits(out, tokens)
    assert ours.shape == reference.shape
    error = (ours - reference).abs().max().item()
    print(f"\nlargest logit difference to transformers over {LENGTH} positions: {error:.2e}")
    assert error <= 1e-4

    # The comparison can fail: the same weights read with plain RoPE, or the default base, differ there.
    for name, change in (("no scaling", {"rope_scaling": None}), ("base 10,000", {"rope_theta": 10000.0})):
        altered = str(tmp_path / name.replace(" ", "_").replace(",", ""))
        os.makedirs(altered)
        config = json.load(open(os.path.join(out, "config.json")))
        config.update(change)
        config["rope_parameters"] = {**(config["rope_scaling"] or {"rope_type": "default"}), "rope_theta": config["rope_theta"]}
        json.dump(config, open(os.path.join(altered, "config.json"), "w"))
        os.symlink(os.path.join(out, "model.safetensors"), os.path.join(altered, "model.safetensors"))
        wrong = (ours[:, 256:] - _hf_logits(altered, tokens)[:, 256:]).abs().max().item()
        print(f"with {name}: {wrong:.2e}")
        assert wrong > 100 * max(error, 1e-6), name
