"""Wraps model chunks in megatron-core's Megatron-FSDP (parallel.fsdp): parameters, gradients and optimizer states
sharded over the data-parallel ranks.

The FSDP counterpart of parallelize/ddp.py, which builds the DDP config both share and calls this; it must not choose
shapes or kernels (model/) nor construct the optimizer (training/optimization.py, where megatron-core picks the
FSDP optimizer from the chunks' DDP config).
"""

from __future__ import annotations

from typing import List

import torch
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.distributed.fsdp.mcore_fsdp_adapter import FullyShardedDataParallel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_sota.runtime.cpu_compat import indexed_current_device
from megatron_sota.runtime.upstream import FSDP_WITHOUT_TE, applies

def wrap_in_fsdp(
    chunks: List[torch.nn.Module], config: TransformerConfig, ddp_config: DistributedDataParallelConfig,
    strategy: str, device: torch.device,
) -> List[FullyShardedDataParallel]:
    """Each chunk (on `device` already) in Megatron-FSDP with `strategy` (parallel.fsdp) as its sharding strategy;
    with optim_grads_params, one TransformerLayer is the unit whose weights are gathered before its forward and
    backward (megatron-core's default)."""
    _te_linear_placeholder_as_a_type()
    ddp_config.use_megatron_fsdp = True
    ddp_config.data_parallel_sharding_strategy = strategy
    wrapped = []
    for chunk in chunks:
        # Its constructor spells a device from torch.cuda.current_device(); on CPU runs that answers an index then.
        with indexed_current_device():
            wrapped.append(FullyShardedDataParallel(config=config, ddp_config=ddp_config, module=chunk, device=device))
    return wrapped


class _NoTELinear:
    """Stands where Transformer Engine's TELinear would be: nothing is an instance of it."""


def _te_linear_placeholder_as_a_type() -> None:
    """Without Transformer Engine, megatron-core 0.16.1 names a MagicMock as TELinear, and its FSDP adapter's
    `isinstance(module, (TELinear,))` (reached at tp > 1) raises TypeError; a class no module is an instance of
    gives the answer a build without TE means: no module is a TELinear."""
    if not applies(FSDP_WITHOUT_TE):
        return
    import megatron.core.distributed.fsdp.mcore_fsdp_adapter as adapter

    if not isinstance(adapter.TELinear, type):
        adapter.TELinear = _NoTELinear
