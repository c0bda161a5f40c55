"""Initial weights that depend only on (init seed, which tensor, element position in the checkpoint's global tensor).

Each rank generates only its own slice, on the tensor's device (model/keyed_normal.py: a counter-based hash of the
tensor's key and the element's position in its checkpoint-layout global tensor). Nothing is drawn from a stateful
generator, so neither the tensor-parallel size nor the pipeline split, the virtual stages or the vocabulary padding
can change a value: the model is the same at every layout. Before this, every TP rank built each full master tensor
on the CPU and kept its slice (megatron-core's use_cpu_initialization), ~1.7e9 draws per sota_175b layer per rank.

Which tensor: transformer layers are built inside `layer_scope(global layer number)` (model/layer_spec.py), and
their weights are keyed by (layer, order of the init call within the layer); the embedding and the output layer,
built outside layers, are keyed by their init method's role. `model_scope(seed)` (model/gpt_builder.py) brings the
init seed; an init call outside it is an error.

Transformer Engine: TE's layers call the init method before TE and megatron-core mark how the weight is split
(TE's reset_parameters; megatron-core's wrapper then sets partition_stride): at TP > 1 a layer weight that comes
unmarked is filled when its layer's scope closes, by then marked. (TE's fp8 primary weights, which quantise right
after the init call, would not see that fill; this project does not enable them.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.model import keyed_normal
from megatron_sota.model.keyed_normal import fill_normal, tensor_key

_NON_LAYER_SLOTS = {"embedding": 0, "weight": 1, "output": 2}


@dataclass
class _Scope:
    seed: int
    layer: Optional[int] = None
    calls: int = 0
    used: set = field(default_factory=set)
    pending: list = field(default_factory=list)
    """(tensor, key, std) of weights whose TP split was not marked yet when initialised (Transformer Engine)."""


_scopes: list[_Scope] = []


@contextlib.contextmanager
def model_scope(seed: int) -> Iterator[None]:
    """Weights initialised in this block are keyed by `seed` (train.seed)."""
    _scopes.append(_Scope(seed=seed))
    try:
        yield
    finally:
        _scopes.pop()


@contextlib.contextmanager
def layer_scope(global_layer: int) -> Iterator[None]:
    """Weights initialised in this block belong to transformer layer `global_layer` (1-based, whole model)."""
    if not _scopes:
        raise MegatronSotaError("a transformer layer was built outside model_scope: its initial weights have no seed")
    scope = _Scope(seed=_scopes[-1].seed, layer=global_layer)
    _scopes.append(scope)
    try:
        yield
    finally:
        _scopes.pop()
    for tensor, key, std in scope.pending:
        if not getattr(tensor, "tensor_model_parallel", False):
            raise MegatronSotaError(
                f"a weight of layer {global_layer} of shape {tuple(tensor.shape)} was never marked with its "
                "tensor-parallel split (partition_dim): its slice of the global tensor is unknown"
            )
        fill_normal(tensor, key, std)


@dataclass(frozen=True)
class KeyedNormalInit:
    """megatron-core's init_method: normal(0, std), keyed by the tensor's place in the global model.

    `role` names the init method (weight: config.init_method, output: config.output_layer_init_method, embedding:
    config.embedding_init_method); outside a transformer layer it is the tensor's key, so each role may initialise
    one tensor there per model.
    """

    std: float
    role: str

    def __call__(self, tensor: torch.Tensor) -> None:
        if not _scopes:
            raise MegatronSotaError(
                f"the {self.role} init method was called outside model_scope: build models with "
                "model.gpt_builder.build_model_chunks"
            )
        scope = _scopes[-1]
        if scope.layer is not None:
            key = tensor_key(scope.seed, scope.layer, scope.calls)
            scope.calls += 1
        else:
            if self.role in scope.used:
                raise MegatronSotaError(
                    f"a second tensor outside the transformer layers used the {self.role} init method; "
                    "it would get the same initial values as the first"
                )
            scope.used.add(self.role)
            key = tensor_key(scope.seed, 0, _NON_LAYER_SLOTS[self.role])
        if not getattr(tensor, "tensor_model_parallel", False) and keyed_normal.tp_position()[1] > 1:
            if scope.layer is None:
                raise MegatronSotaError(
                    f"the {self.role} init method got a weight of shape {tuple(tensor.shape)} outside the transformer "
                    "layers without its tensor-parallel split (partition_dim)"
                )
            scope.pending.append((tensor, key, self.std))  # Transformer Engine marks the split after this call
            return
        fill_normal(tensor, key, self.std)


def keyed_init_methods(init_method_std: float, num_layers: int) -> dict[str, KeyedNormalInit]:
    """TransformerConfig's three init methods, with megatron-core's standard deviations (utils.init_method_normal,
    scaled_init_method_normal: std / sqrt(2 * num_layers) for the projections back into the residual stream)."""
    return {
        "init_method": KeyedNormalInit(init_method_std, "weight"),
        "output_layer_init_method": KeyedNormalInit(init_method_std / math.sqrt(2.0 * num_layers), "output"),
        "embedding_init_method": KeyedNormalInit(init_method_std, "embedding"),
    }
