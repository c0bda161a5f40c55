"""Parameter counts of the presets, checked against published model sizes and the 150-200B target."""

from __future__ import annotations

import os

import pytest
import yaml

from megatron_sota.config.files import conf_dir
from megatron_sota.config.model import ModelConfig
from megatron_sota.model.gpt_builder import padded_vocab_size
from megatron_sota.model.param_count import count_params, train_flops_per_token

CONF = conf_dir("model")


def preset(name: str) -> ModelConfig:
    with open(os.path.join(CONF, f"{name}.yaml")) as handle:
        return ModelConfig(**yaml.safe_load(handle))


def total(name: str, pp: int = 1) -> int:
    model = preset(name)
    return count_params(model, padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by, 1), pp).total


def test_llama_8b_has_meta_llama3_8b_parameter_count():
    assert total("llama_8b") == 8_030_261_248  # Meta-Llama-3-8B as published


def test_llama_70b_has_meta_llama3_70b_parameter_count():
    assert total("llama_70b") == 70_553_706_496  # Meta-Llama-3-70B as published


def test_sota_175b_lands_in_the_150_to_200b_class_with_the_spec_architecture():
    model = preset("sota_175b")
    assert 150e9 <= total("sota_175b") <= 200e9
    assert model.head_dim == 128 and model.num_layers >= 96 and 128_000 <= model.vocab_size <= 256_000
    assert model.num_query_groups < model.num_attention_heads  # GQA


def test_spec_literal_numbers_exceed_the_stated_size():
    assert total("sota_spec_literal") > 300e9


def test_tiny_is_a_few_million_parameters_and_fits_tp2_pp2_vpp2():
    model = preset("tiny")
    assert 1e6 < total("tiny") < 20e6
    assert model.num_layers % 4 == 0 and model.num_attention_heads % 2 == 0 and model.num_query_groups % 2 == 0


@pytest.mark.parametrize("name", ["tiny", "llama_8b", "sota_175b"])
def test_stage_counts_sum_to_the_total(name):
    model = preset(name)
    vocab = padded_vocab_size(model.vocab_size, 128, 1)
    counts = count_params(model, vocab, pp=4)
    assert sum(counts.per_stage) == counts.total
    assert counts.per_stage[0] - counts.embedding == counts.per_stage[1]


def test_flops_per_token_is_six_n_plus_attention():
    model = preset("llama_1b3")
    vocab = 32000
    n = count_params(model, vocab).total - vocab * model.hidden_size - (2 * model.num_layers + 1) * model.hidden_size
    full = train_flops_per_token(model, vocab, 4096)
    assert full == 6 * n + 12 * 24 * 2048 * 4096
    assert train_flops_per_token(model, vocab, 4096, causal=True) == 6 * n + 6 * 24 * 2048 * 4096


def test_vocab_padding_does_not_depend_on_tp_when_tp_divides_it():
    assert padded_vocab_size(8000, 128, 1) == padded_vocab_size(8000, 128, 2) == padded_vocab_size(8000, 128, 8) == 8064
    assert padded_vocab_size(8000, 128, 3) % 3 == 0
