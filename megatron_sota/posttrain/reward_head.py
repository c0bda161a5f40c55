"""The reward model: megatron-core's GPTModel whose last pipeline stage ends in a scalar head instead of the vocabulary.

It owns the head's weight, its TP/SP layout and its checkpoint key; it must not know the loss, the data or files.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel import gather_from_sequence_parallel_region
from megatron.core.tensor_parallel.layers import set_defaults_if_not_set_tensor_model_parallel_attributes
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.conversion.llama_mapping import REWARD_HEAD
from megatron_sota.errors import MegatronSotaError

# GPTModel calls its `output_layer`; the head's own parameter sits one level down so that its key
# (output_layer.score.weight) never meets a pretrained checkpoint's vocabulary projection (output_layer.weight).
HEAD_PREFIX = REWARD_HEAD[: -len("weight")]


class RewardHead(torch.nn.Module):
    """Linear(hidden, 1, no bias), replicated over TP, in GPTModel's output-layer call signature.

    The product is taken in fp32 whatever the model's dtype (Float16Module stores the weight in bf16
    under bf16 training; the optimizer's master copy stays fp32). With sequence parallelism each TP rank
    holds a slice of the sequence: the head gathers the whole sequence first, so every rank computes the
    same scores and the same weight gradient, and hands back only its own slice's input gradient (no sum).
    """

    def __init__(self, config: TransformerConfig, tp_group: Optional[torch.distributed.ProcessGroup], seed: int):
        super().__init__()
        self.sequence_parallel = config.sequence_parallel
        self.tp_group = tp_group
        weight = torch.empty(1, config.hidden_size, dtype=torch.float32)
        # A generator of its own: every TP rank and every layout draws the same initial head.
        weight.normal_(0.0, config.init_method_std, generator=torch.Generator().manual_seed(seed))
        self.score = torch.nn.Linear(config.hidden_size, 1, bias=False, dtype=torch.float32)
        with torch.no_grad():
            self.score.weight.copy_(weight)
        # Not TP-sharded and not marked sequence_parallel: its gradient is already whole on every rank,
        # and the grad-norm counts it once (on TP rank 0), like other replicated weights.
        set_defaults_if_not_set_tensor_model_parallel_attributes(self.score.weight)

    def forward(
        self, hidden_states: torch.Tensor, weight: Optional[torch.Tensor] = None, runtime_gather_output: Optional[bool] = None
    ) -> Tuple[torch.Tensor, None]:
        """[s(/tp), b, h] -> ([s, b, 1] fp32 scores, None)."""
        if weight is not None:
            raise MegatronSotaError("the reward head cannot take a tied output weight: build the model untied")
        if self.sequence_parallel:
            hidden_states = gather_from_sequence_parallel_region(
                hidden_states, tensor_parallel_output_grad=False, group=self.tp_group
            )
        scores = torch.nn.functional.linear(hidden_states.float(), self.score.weight.float())
        return scores, None


class RewardGPTModel(GPTModel):
    """GPTModel whose last-stage output layer is a RewardHead; call it with labels=None to get [b, s, 1] scores.

    Build it with untied embeddings: a tied last stage would share its output weight with the first
    stage's embedding (and all-reduce their gradients), which the head replaces.
    """

    def __init__(self, *args, head_seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        if self.share_embeddings_and_output_weights:
            raise MegatronSotaError(
                "model.untie_embeddings_and_output_weights=false: a reward model replaces the output layer, "
                "so it must be built untied (expected true)"
            )
        if self.config.mtp_num_layers:
            raise MegatronSotaError("multi-token prediction needs the vocabulary output layer; a reward model has none")
        if self.post_process:
            self.output_layer = RewardHead(self.config, self.pg_collection.tp, head_seed)

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        # LanguageModule's version flags `output_layer.weight` (absent here) for vocabulary padding, and
        # GPTModel's drops the output layer's extra state (a RewardHead has none): the generic module walk
        # is all that is left; the head's weight becomes a TP-replicated sharded tensor.
        return MegatronModule.sharded_state_dict(self, prefix, sharded_offsets, metadata)


def reward_model_class(head_seed: int):
    """The model constructor to build reward-model chunks with (GPTModel's arguments, plus the head's seed)."""

    def build(*args, **kwargs) -> RewardGPTModel:
        return RewardGPTModel(*args, head_seed=head_seed, **kwargs)

    return build


def keys_missing_from_pretrained(keys: Iterable[str]) -> List[str]:
    """The reward-model keys (of a chunk's state dict or sharded state dict) that a pretrained language
    model's checkpoint does not hold: leave them out of the template given to dist_checkpointing.load,
    which would otherwise fail on them, and keep the model's fresh values for them.

    The pretrained checkpoint's own `output_layer.weight` needs nothing: megatron-core's default
    (StrictHandling.ASSUME_OK_UNEXPECTED) ignores checkpoint tensors the template does not ask for.
    """
    return [key for key in keys if key.startswith(HEAD_PREFIX)]
