"""One parallel layout of a training run as the planner sees it, and its `tp=8,pp=8,...` spelling.

Only the numbers that decide memory and time; checking that they fit a model is search.py's job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from megatron_sota.errors import MegatronSotaError

RECOMPUTE = ("none", "selective", "full")
FSDP = ("none", "optim", "optim_grads", "optim_grads_params")
"""parallel.fsdp: megatron-core Megatron-FSDP's data_parallel_sharding_strategy (none: its DDP)."""
FSDP_TOKENS = {"optim": "zero1", "optim_grads": "zero2", "optim_grads_params": "zero3"}
"""How the table's layout column spells each Megatron-FSDP strategy: its ZeRO stage."""
DTYPES = {"bf16": 2, "fp32": 4}
"""Bytes per element of the parameters (and of the activations: megatron-core computes in params_dtype)."""


@dataclass(frozen=True)
class ParallelLayout:
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    """Virtual stages per pipeline rank (1: plain 1F1B)."""
    cp: int = 1
    dp: int = 1
    micro_batch_size: int = 1
    num_microbatches: int = 1
    """Micro-batches per step on each data-parallel rank: global batch / (micro_batch_size * dp)."""
    seq_length: int = 4096
    sp: bool = False
    """Sequence parallelism (norms, residuals and pipeline messages split over the TP ranks)."""
    recompute: str = "none"
    distributed_optimizer: bool = True
    """megatron-core's distributed optimizer under its DDP (ZeRO-1); only read when fsdp is none."""
    fsdp: str = "none"
    """Megatron-FSDP's sharding strategy (FSDP); any but none shards the optimizer as well."""
    dtype: str = "bf16"

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.num_microbatches * self.dp

    @property
    def bytes_per_element(self) -> int:
        return DTYPES[self.dtype]

    @property
    def shards_optimizer(self) -> bool:
        """Optimizer states (and fp32 main params) split over the dp*cp ranks."""
        return self.distributed_optimizer or self.fsdp != "none"

    @property
    def sharding(self) -> str:
        """opt (replicated), dopt (distributed optimizer), or zero1/zero2/zero3 (Megatron-FSDP)."""
        if self.fsdp != "none":
            return FSDP_TOKENS[self.fsdp]
        return "dopt" if self.distributed_optimizer else "opt"

    def short(self) -> str:
        """tp8 pp8 vpp1 cp1 dp16 mbs1 sp full dopt: the table's first column."""
        parts = [f"tp{self.tp}", f"pp{self.pp}", f"vpp{self.vpp}", f"cp{self.cp}", f"dp{self.dp}", f"mbs{self.micro_batch_size}"]
        parts += ["sp" if self.sp else "-", self.recompute, self.sharding]
        return " ".join(parts)

    def spec(self) -> str:
        """The `key=value,...` spelling parse_layout reads back into this layout (for --layout)."""
        flags = {"sp": int(self.sp), "dopt": int(self.distributed_optimizer)}
        return (
            f"tp={self.tp},pp={self.pp},vpp={self.vpp},cp={self.cp},dp={self.dp},mbs={self.micro_batch_size},"
            f"num_microbatches={self.num_microbatches},seq={self.seq_length},sp={flags['sp']},"
            f"recompute={self.recompute},dopt={flags['dopt']},fsdp={self.fsdp},dtype={self.dtype}"
        )


def parse_layout(text: str, **defaults) -> ParallelLayout:
    """`tp=8,pp=8,vpp=1,mbs=1,recompute=full,sp=1,dopt=1,fsdp=none,dtype=bf16`; unset keys come from `defaults`.

    dp is derived by the caller from the world size when not given (it needs the cluster).
    """
    values = dict(defaults)
    aliases = {"mbs": "micro_batch_size", "dopt": "distributed_optimizer", "seq": "seq_length"}
    fields = {f.name for f in dataclasses.fields(ParallelLayout)}
    choices = {"recompute": RECOMPUTE, "dtype": tuple(DTYPES), "fsdp": FSDP}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = aliases.get(key.strip(), key.strip())
        if not sep or key not in fields:
            valid = ", ".join(sorted(fields | set(aliases)))
            raise MegatronSotaError(f"--layout: cannot read '{item}': expected key=value with a key among {valid}")
        raw = raw.strip()
        if key in ("sp", "distributed_optimizer"):
            if raw.lower() not in ("1", "0", "true", "false", "on", "off"):
                raise MegatronSotaError(f"--layout: {key}={raw}: expected 1/0, true/false or on/off")
            values[key] = raw.lower() in ("1", "true", "on")
        elif key in choices:
            if raw not in choices[key]:
                raise MegatronSotaError(f"--layout: {key}={raw}: expected one of {', '.join(choices[key])}")
            values[key] = raw
        else:
            try:
                values[key] = int(raw)
            except ValueError:
                raise MegatronSotaError(f"--layout: {key}={raw}: expected a whole number") from None
            if values[key] < 1:
                raise MegatronSotaError(f"--layout: {key}={raw}: expected a number >= 1")
    if values.get("fsdp", "none") != "none" and values.get("distributed_optimizer") is False:
        # Megatron-FSDP always shards the optimizer (its main params live in its sharded buffer).
        raise MegatronSotaError(f"--layout: fsdp={values['fsdp']} with dopt=0: FSDP always shards the optimizer; drop dopt=0")
    return ParallelLayout(**values)
