"""Wraps model chunks in PyTorch FSDP2 through megatron-core's TorchFullyShardedDataParallel (parallel.fsdp_impl=torch).

The FSDP2 counterpart of parallelize/fsdp.py, called by parallelize/ddp.py; it must not choose shapes or kernels
(model/) nor construct the optimizer (training/optimization.py: megatron-core's non-distributed optimizer over the
DTensor parameters, as Megatron-LM pairs with --use-torch-fsdp2).
"""

from __future__ import annotations

from typing import List

import torch
from megatron.core.distributed import DistributedDataParallelConfig, torch_fully_sharded_data_parallel
from megatron.core.distributed.torch_fully_sharded_data_parallel import TorchFullyShardedDataParallel
from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer
from torch.distributed.fsdp import FSDPModule

from megatron_sota.runtime.cpu_compat import cpu_device_mesh
from megatron_sota.runtime.upstream import TORCH_FSDP_DDP_HOOKS, applies


# megatron-core's default units less ColumnParallelLinear, which it means for the output layer (next to TE's own
# linears); in the local spec the layers' linears are ColumnParallelLinears too, and fully_shard on one inside an
# already wrapped TransformerLayer fails (its parameters are DTensors by then). The output layer joins the root unit.
_UNITS = {TransformerLayer, LanguageModelEmbedding, RotaryEmbedding}


class TorchFSDP(TorchFullyShardedDataParallel):
    """megatron-core's FSDP2 wrapper with the two hooks of the DDP interface that megatron-core 0.16.1's
    finalize_model_grads relies on and the wrapper leaves out."""

    def finish_grad_sync(self, force_all_reduce: bool = False) -> None:
        # FSDP2 reduce-scatters each unit's gradients in its post-backward hook: nothing is left to finish.
        # (0.16.1's base class takes no force_all_reduce, which finalize_model_grads passes.)
        pass

    def scale_gradients(self, scaling_factor: float) -> None:
        """Multiplies every local gradient shard by `scaling_factor` (1/tokens of the global batch, per-token loss)."""
        with torch.no_grad():
            for param in self.module.parameters():
                if param.grad is not None:
                    param.grad.mul_(scaling_factor)


def _sum_gradients(root: torch.nn.Module) -> None:
    """FSDP2 averages gradients over data-parallel ranks; megatron-core's per-token loss wants their sum (the DDP
    wrapper's gradient_scaling_factor of 1), to be divided by the global token count afterwards."""
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def wrap_in_torch_fsdp(
    chunks: List[torch.nn.Module], config: TransformerConfig, ddp_config: DistributedDataParallelConfig
) -> List[TorchFSDP]:
    """Each chunk (on its device already) in FSDP2: every TransformerLayer, the embedding and the root module a unit
    whose parameters are all-gathered before its forward and backward and resharded after (reshard_after_forward)."""
    wrapper = TorchFSDP if applies(TORCH_FSDP_DDP_HOOKS) else TorchFullyShardedDataParallel
    wrapped = []
    for chunk in chunks:
        with cpu_device_mesh(torch_fully_sharded_data_parallel):
            model = wrapper(config=config, ddp_config=ddp_config, module=chunk, sub_modules_to_wrap=_UNITS)
        _sum_gradients(model.module)
        wrapped.append(model)
    return wrapped
