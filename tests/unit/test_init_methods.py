"""Keyed initialisation (model/init_methods.py, model/keyed_normal.py): normal(0, std) per tensor kind, values
that depend only on the element's global position (not on the piece that computes it, the TP slice, its stride or
the vocabulary padding), and keys that tell tensors apart."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.model import keyed_normal
from megatron_sota.model.init_methods import KeyedNormalInit, keyed_init_methods, layer_scope, model_scope
from megatron_sota.model.keyed_normal import fill_normal, standard_normals, tensor_key


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def test_config_init_methods_have_megatron_core_stds():
    from megatron_sota.config.model import ModelConfig
    from megatron_sota.config.optim import PrecisionConfig
    from megatron_sota.config.parallel import ParallelConfig
    from megatron_sota.model.gpt_builder import build_transformer_config

    model = ModelConfig(num_layers=6, init_method_std=0.013)
    config = build_transformer_config(model, ParallelConfig(), PrecisionConfig(), "none", "cpu", use_te=False)
    assert config.init_method == KeyedNormalInit(0.013, "weight")
    assert config.embedding_init_method == KeyedNormalInit(0.013, "embedding")
    # megatron-core's scaled_init_method_normal: std / sqrt(2 * num_layers) for linear_proj and linear_fc2.
    assert config.output_layer_init_method == KeyedNormalInit(0.013 / math.sqrt(12), "output")
    assert not config.use_cpu_initialization


@pytest.mark.parametrize("std", [0.02, 0.02 / math.sqrt(2 * 104)])
def test_values_are_normal_with_the_given_std(std):
    n_rows, n_cols = 512, 512
    weight = torch.empty(n_rows, n_cols)
    fill_normal(weight, tensor_key(3, 7, 1), std)
    x = weight.flatten().double()
    n = x.numel()
    # Sample mean ~ N(0, std^2/n); sample variance has relative sd sqrt(2/n): 5 sigma bounds.
    assert abs(x.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(x.var().item() / std**2 - 1) < 5 * math.sqrt(2 / n)
    # Kolmogorov-Smirnov distance to N(0, std): 1.95/sqrt(n) is its 0.1% critical value.
    sorted_x, _ = torch.sort(x / std)
    cdf = _normal_cdf(sorted_x)
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum(ranks - cdf, cdf - (ranks - 1 / n)).max().item()
    assert ks < 1.95 / math.sqrt(n)


def test_a_value_does_not_depend_on_the_piece_that_computes_it():
    key = tensor_key(0, 1, 0)
    index = torch.arange(200_003)
    whole = standard_normals(key, index.clone())  # the index tensor is overwritten
    cuts = [0, 1, 4, 11, 2060, 4109, 70_000, 200_003]  # odd sizes: vector tails in every piece
    pieces = torch.cat([standard_normals(key, index[a:b].clone()) for a, b in zip(cuts, cuts[1:])])
    assert torch.equal(whole, pieces)
    by_pairs = torch.empty(7, 28_570)  # even rows: fill_normal hashes pairs of elements, not single ones
    fill_normal(by_pairs, key, 1.0)
    assert torch.equal(by_pairs.flatten(), whole[: by_pairs.numel()])


def _megatron_slices(global_rows: int, global_cols: int, dim: int, stride: int, tp: int, key: int, std: float = 1.0) -> list:
    """Each TP rank's slice as megatron-core's CPU initialisation cuts it from the full master weight."""
    from megatron.core.tensor_parallel.layers import _initialize_affine_weight_cpu

    slices = []
    for rank in range(tp):
        shape = [global_rows, global_cols]
        shape[dim] //= tp
        local = torch.empty(shape)
        _initialize_affine_weight_cpu(
            local, global_rows, global_cols, shape[dim], dim, lambda w: fill_normal(w, key, std),
            stride=stride, rank=rank, world_size=tp,
        )
        slices.append(local)
    return slices


@pytest.mark.parametrize(
    "dim, stride, cols",
    [(0, 1, 96), (1, 1, 96), (0, 2, 96), (1, 1, 12)],
    ids=["column-parallel", "row-parallel", "swiglu-fc1", "row-parallel-odd-columns"],
)
def test_a_tp_slice_holds_megatrons_slice_of_the_global_tensor(monkeypatch, dim, stride, cols):
    """The odd-columns case gives slices 3 wide starting at odd columns: values computed element by element where the
    full tensor computes them pair by pair."""
    from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

    key, tp, rows = tensor_key(1, 2, 3), 4, 64
    expected = _megatron_slices(rows, cols, dim, stride, tp, key)
    for rank in range(tp):
        monkeypatch.setattr(keyed_normal, "tp_position", lambda: (rank, tp))
        shape = [rows, cols]
        shape[dim] //= tp
        local = torch.empty(shape)
        set_tensor_model_parallel_attributes(local, True, dim, stride)
        fill_normal(local, key, 1.0)
        assert torch.equal(local, expected[rank]), f"rank {rank}"


def test_a_row_does_not_depend_on_vocabulary_padding():
    key = tensor_key(0, 0, 0)
    small, padded = torch.empty(1000, 64), torch.empty(1024, 64)
    fill_normal(small, key, 0.02)
    fill_normal(padded, key, 0.02)
    assert torch.equal(padded[:1000], small)


def test_keys_tell_tensors_and_seeds_apart():
    def draw(seed, layer, slot):
        weight = torch.empty(4, 32)
        fill_normal(weight, tensor_key(seed, layer, slot), 1.0)
        return weight

    base = draw(0, 1, 0)
    assert torch.equal(base, draw(0, 1, 0))
    for other in (draw(1, 1, 0), draw(0, 2, 0), draw(0, 1, 1), draw(0, 0, 0)):
        assert not torch.equal(base, other)


def test_layer_weights_are_keyed_by_global_layer_and_call_order():
    init = keyed_init_methods(0.02, 4)
    with model_scope(9):
        with layer_scope(3):
            first, second = torch.empty(8, 16), torch.empty(8, 16)
            init["init_method"](first)
            init["output_layer_init_method"](second)
        embedding = torch.empty(8, 16)
        init["embedding_init_method"](embedding)
    expected_first, expected_second = torch.empty(8, 16), torch.empty(8, 16)
    fill_normal(expected_first, tensor_key(9, 3, 0), 0.02)
    fill_normal(expected_second, tensor_key(9, 3, 1), 0.02 / math.sqrt(8))
    assert torch.equal(first, expected_first) and torch.equal(second, expected_second)
    fill_normal(expected_first, tensor_key(9, 0, 0), 0.02)
    assert torch.equal(embedding, expected_first)


def test_init_outside_a_model_build_or_twice_per_role_is_refused():
    init = keyed_init_methods(0.02, 4)["init_method"]
    with pytest.raises(MegatronSotaError, match="outside model_scope"):
        init(torch.empty(2, 2))
    with model_scope(0), pytest.raises(MegatronSotaError, match="second tensor"):
        init(torch.empty(2, 2))
        init(torch.empty(2, 2))


def test_a_weight_marked_after_its_init_call_is_filled_when_its_layer_closes(monkeypatch):
    """Transformer Engine's order: TE's reset_parameters calls the init method on the local weight, then TE sets
    partition_dim and megatron-core's wrapper partition_stride (extensions/transformer_engine.py)."""
    from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

    tp, rows, cols, std = 4, 64, 96, 0.02
    init = keyed_init_methods(std, 4)["init_method"]
    expected = _megatron_slices(rows, cols, 0, 2, tp, tensor_key(9, 3, 1), std)  # the layer's second init call
    for rank in range(tp):
        monkeypatch.setattr(keyed_normal, "tp_position", lambda: (rank, tp))
        first, fc1 = torch.zeros(rows // tp, cols), torch.zeros(rows // tp, cols)
        with model_scope(9), layer_scope(3):
            init(first)
            init(fc1)
            assert not fc1.any()  # not filled before its split is known
            set_tensor_model_parallel_attributes(first, True, 0, 1)
            set_tensor_model_parallel_attributes(fc1, True, 0, 1)
            fc1.partition_stride = 2
        assert torch.equal(fc1, expected[rank]), f"rank {rank}"


def test_a_weight_never_marked_at_tp2_is_refused(monkeypatch):
    monkeypatch.setattr(keyed_normal, "tp_position", lambda: (0, 2))
    init = keyed_init_methods(0.02, 4)["init_method"]
    with pytest.raises(MegatronSotaError, match="never marked"), model_scope(0), layer_scope(1):
        init(torch.empty(4, 4))
    with pytest.raises(MegatronSotaError, match="outside the transformer layers"), model_scope(0):
        init(torch.empty(4, 4))


def test_shapes_only_builds_are_left_unfilled(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    def refuse(*args, **kwargs):
        raise AssertionError("values computed for a tensor that has none")

    monkeypatch.setattr(keyed_normal, "_fill_region", refuse)
    with FakeTensorMode():
        fill_normal(torch.empty(4096, 4096), tensor_key(0, 1, 0), 0.02)  # the rehearsal's fake tensors
    fill_normal(torch.empty(4096, 4096, device="meta"), tensor_key(0, 1, 0), 0.02)
    with pytest.raises(AssertionError, match="has none"):
        fill_normal(torch.empty(2, 2), tensor_key(0, 1, 0), 0.02)  # the guard above is live
