"""Enumerates the parallel layouts of a model on a cluster, rejects the impossible ones with a reason,
and ranks the rest by estimated throughput.

Reasons are data (Rejection.kind + message) so that tests and --show-rejected can read them; the
arithmetic lives in memory.py and step_time.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, List, Optional, Sequence, Tuple

from megatron_sota.config.model import ModelConfig
from megatron_sota.config.parallel import FSDP_WITHOUT_PIPELINE
from megatron_sota.model.gpt_builder import padded_vocab_size
from megatron_sota.planning.cluster import ClusterSpec
from megatron_sota.planning.layout import RECOMPUTE, ParallelLayout
from megatron_sota.planning.memory import MemoryEstimate, estimate_memory
from megatron_sota.planning.step_time import Efficiency, StepTime, estimate_step_time

GIB = 2**30
MIN_CP_TOKENS = 2048
"""Below this many tokens of a sequence per CP rank, the attention kernels run short blocks and the
ring's K,V exchange outlasts them: the default search stops splitting there."""


@dataclass(frozen=True)
class PlanRequest:
    model: ModelConfig
    cluster: ClusterSpec
    seq_length: int
    global_batch_size: int
    """Sequences per optimizer step (global batch tokens / seq_length)."""
    dtype: str = "bf16"
    efficiency: Efficiency = Efficiency()
    memory_fraction: float = 0.9
    """Share of the GPU's memory the estimate may fill: the rest is for what it does not count
    (CUDA context and NCCL buffers, ~1-3 GiB, and the caching allocator's fragmentation)."""
    optimizer_kernel: str = "fused"

    @property
    def usable_bytes(self) -> float:
        return self.cluster.gpu.memory_gib * GIB * self.memory_fraction

    def padded_vocab(self, tp: int) -> int:
        return padded_vocab_size(self.model.vocab_size, self.model.make_vocab_size_divisible_by, tp)


@dataclass(frozen=True)
class SearchSpace:
    tp: Optional[Sequence[int]] = None
    """Default: 1 .. 2 x GPUs per node (beyond one node only to say why not)."""
    pp: Optional[Sequence[int]] = None
    """Default: the divisors of the layer count, and the powers of two below it."""
    max_vpp: int = 16
    cp: Optional[Sequence[int]] = None
    """Default: the powers of two that leave each CP rank at least MIN_CP_TOKENS of the sequence."""
    micro_batch_sizes: Sequence[int] = (1, 2, 4)
    recompute: Sequence[str] = RECOMPUTE
    distributed_optimizer: Sequence[bool] = (True, False)
    """Under megatron-core's DDP (the fsdp "none" layouts)."""
    fsdp: Sequence[str] = ("none", "optim_grads", "optim_grads_params")
    """Megatron-FSDP strategies to try besides none. optim is left out by default: it holds and
    sends what the distributed optimizer does (in bf16, to the byte)."""


@dataclass(frozen=True)
class Rejection:
    where: str
    """The (partial) layout it applies to, e.g. 'tp=16' or 'tp8 pp8 vpp1 cp1 dp16 mbs1 sp none dopt'."""
    kind: str
    """tp_across_nodes, heads_not_divisible, groups_not_divisible, ffn_not_divisible,
    layers_not_divisible, seq_not_divisible, world_not_divisible, batch_not_divisible,
    interleave_microbatches, fsdp_with_pipeline or memory."""
    message: str


@dataclass(frozen=True)
class Plan:
    layout: ParallelLayout
    memory: MemoryEstimate
    time: StepTime
    padded_vocab: int


@dataclass
class SearchResult:
    plans: List[Plan] = field(default_factory=list)
    """Feasible layouts, fastest first."""
    rejections: List[Rejection] = field(default_factory=list)


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_cp_sizes(seq_length: int) -> List[int]:
    """1, 2, 4, ... while each CP rank keeps at least MIN_CP_TOKENS tokens of the sequence."""
    sizes = [1]
    while seq_length // (2 * sizes[-1]) >= MIN_CP_TOKENS:
        sizes.append(2 * sizes[-1])
    return sizes


def tp_problems(model: ModelConfig, tp: int, gpus_per_node: int) -> List[Rejection]:
    where, out = f"tp={tp}", []
    if tp > gpus_per_node:
        out.append(Rejection(where, "tp_across_nodes", f"tp={tp} > {gpus_per_node} GPUs per node: tensor parallel across nodes"))
    if model.num_attention_heads % tp:
        out.append(Rejection(where, "heads_not_divisible", f"heads {model.num_attention_heads} not divisible by tp {tp}"))
    if model.num_query_groups % tp:
        out.append(Rejection(where, "groups_not_divisible", f"query groups {model.num_query_groups} not divisible by tp {tp}"))
    if model.ffn_hidden_size % tp:
        out.append(Rejection(where, "ffn_not_divisible", f"ffn_hidden_size {model.ffn_hidden_size} not divisible by tp {tp}"))
    return out


def layout_problems(request: PlanRequest, layout: ParallelLayout) -> List[Rejection]:
    """Every reason this layout cannot run (memory aside), as megatron-core and config/validation.py see them."""
    model, where = request.model, layout.short()
    out = [replace(r, where=where) for r in tp_problems(model, layout.tp, request.cluster.gpus_per_node)]
    stages = layout.pp * layout.vpp
    if layout.vpp > 1 and layout.pp < 2:
        out.append(Rejection(where, "layers_not_divisible", f"vpp={layout.vpp} needs pp >= 2 (interleaving splits pipeline stages)"))
    elif model.num_layers % stages:
        out.append(Rejection(where, "layers_not_divisible", f"layers {model.num_layers} not divisible by pp*vpp = {layout.pp}*{layout.vpp}"))
    if layout.seq_length % (2 * layout.cp) or (layout.sp and layout.seq_length % layout.tp):
        out.append(Rejection(where, "seq_not_divisible", f"seq_length {layout.seq_length} not divisible by 2*cp = {2 * layout.cp}" + (f" and tp = {layout.tp} (sequence parallel)" if layout.sp else "")))
    world = request.cluster.world_size
    if layout.world_size != world:
        out.append(Rejection(where, "world_not_divisible", f"tp*pp*cp*dp = {layout.world_size} != {world} GPUs"))
    if layout.global_batch_size != request.global_batch_size:
        out.append(Rejection(where, "batch_not_divisible", f"global batch {request.global_batch_size} != mbs*microbatches*dp = {layout.global_batch_size}"))
    if layout.vpp > 1 and layout.num_microbatches % layout.pp:
        out.append(Rejection(where, "interleave_microbatches", f"interleaving needs micro-batches {layout.num_microbatches} divisible by pp {layout.pp}"))
    if layout.fsdp != "none" and layout.pp > 1:
        out.append(Rejection(where, "fsdp_with_pipeline", f"fsdp={layout.fsdp} with pp={layout.pp}: {FSDP_WITHOUT_PIPELINE}"))
    return out


def memory_problem(request: PlanRequest, layout: ParallelLayout, memory: MemoryEstimate) -> Optional[Rejection]:
    if memory.total <= request.usable_bytes:
        return None
    gpu = request.cluster.gpu
    return Rejection(
        layout.short(),
        "memory",
        f"needs {memory.total / GIB:.1f} GiB > {request.usable_bytes / GIB:.1f} GiB usable "
        f"({request.memory_fraction:.0%} of {gpu.memory_gib:g} GiB {gpu.name})",
    )


def evaluate(request: PlanRequest, layout: ParallelLayout) -> Tuple[Plan, List[Rejection]]:
    """The estimate of one layout, and every reason it cannot run (empty when it can)."""
    vocab = request.padded_vocab(layout.tp)
    problems = layout_problems(request, layout)
    memory = estimate_memory(request.model, vocab, layout, request.optimizer_kernel)
    plan = Plan(layout, memory, estimate_step_time(request.model, vocab, layout, request.cluster, request.efficiency), vocab)
    too_big = memory_problem(request, layout, memory)
    return plan, problems + ([too_big] if too_big else [])


def _shapes(request: PlanRequest, space: SearchSpace, rejected: List[Rejection]) -> Iterator[Tuple[int, int, int, int]]:
    """(tp, pp, cp, dp) that fit the model and the world size; the rest go to `rejected`."""
    model, cluster = request.model, request.cluster
    tps = space.tp or range(1, 2 * cluster.gpus_per_node + 1)
    powers = [2**k for k in range(model.num_layers.bit_length()) if 2**k <= model.num_layers]
    pps = space.pp or sorted(set(_divisors(model.num_layers)) | set(powers))
    good_pp = []
    for pp in pps:
        if model.num_layers % pp:
            rejected.append(Rejection(f"pp={pp}", "layers_not_divisible", f"layers {model.num_layers} not divisible by pp {pp}"))
        else:
            good_pp.append(pp)
    good_cp = []
    for cp in space.cp or default_cp_sizes(request.seq_length):
        if request.seq_length % (2 * cp):
            rejected.append(Rejection(f"cp={cp}", "seq_not_divisible", f"seq_length {request.seq_length} not divisible by 2*cp = {2 * cp}"))
        else:
            good_cp.append(cp)
    for tp in tps:
        problems = tp_problems(model, tp, cluster.gpus_per_node)
        if tp > 1 and request.seq_length % tp:
            problems.append(Rejection(f"tp={tp}", "seq_not_divisible", f"seq_length {request.seq_length} not divisible by tp {tp} (sequence parallel)"))
        if problems:
            rejected.extend(problems)
            continue
        for pp in good_pp:
            for cp in good_cp:
                if cluster.world_size % (tp * pp * cp):
                    rejected.append(Rejection(f"tp={tp} pp={pp} cp={cp}", "world_not_divisible", f"world {cluster.world_size} not divisible by tp*pp*cp = {tp}*{pp}*{cp}"))
                    continue
                yield tp, pp, cp, cluster.world_size // (tp * pp * cp)


def _shardings(space: SearchSpace) -> List[Tuple[bool, str]]:
    """(distributed_optimizer, fsdp) pairs: DDP with each optimizer choice, then each FSDP strategy
    (which always shards the optimizer)."""
    ddp = [(dopt, "none") for dopt in space.distributed_optimizer] if "none" in space.fsdp else []
    return ddp + [(True, fsdp) for fsdp in space.fsdp if fsdp != "none"]


def best_per_sharding(plans: Sequence[Plan]) -> List[Plan]:
    """The fastest plan of each sharding (opt, dopt, zero1-3), in the order of `plans`."""
    best = {}
    for plan in plans:
        best.setdefault(plan.layout.sharding, plan)
    return list(best.values())


def search(request: PlanRequest, space: SearchSpace = SearchSpace()) -> SearchResult:
    result = SearchResult()
    gbs = request.global_batch_size
    for tp, pp, cp, dp in _shapes(request, space, result.rejections):
        vpps = [v for v in _divisors(request.model.num_layers // pp) if v <= space.max_vpp] if pp > 1 else [1]
        for mbs in space.micro_batch_sizes:
            where = f"tp={tp} pp={pp} cp={cp} dp={dp} mbs={mbs}"
            if gbs % (mbs * dp):
                result.rejections.append(Rejection(where, "batch_not_divisible", f"global batch {gbs} not divisible by mbs*dp = {mbs}*{dp}"))
                continue
            m = gbs // (mbs * dp)
            for vpp in vpps:
                if vpp > 1 and m % pp:
                    result.rejections.append(Rejection(f"{where} vpp={vpp}", "interleave_microbatches", f"interleaving needs micro-batches {m} divisible by pp {pp}"))
                    continue
                for recompute in space.recompute:
                    for dopt, fsdp in _shardings(space):
                        if fsdp != "none" and pp > 1:
                            continue  # FSDP_WITHOUT_PIPELINE; layout_problems says so for a layout given by hand
                        layout = ParallelLayout(
                            tp=tp, pp=pp, vpp=vpp, cp=cp, dp=dp, micro_batch_size=mbs, num_microbatches=m,
                            seq_length=request.seq_length, sp=tp > 1, recompute=recompute,
                            distributed_optimizer=dopt, fsdp=fsdp, dtype=request.dtype,
                        )
                        vocab = request.padded_vocab(tp)
                        memory = estimate_memory(request.model, vocab, layout, request.optimizer_kernel)
                        too_big = memory_problem(request, layout, memory)
                        if too_big:
                            result.rejections.append(too_big)
                            continue
                        time = estimate_step_time(request.model, vocab, layout, request.cluster, request.efficiency)
                        result.plans.append(Plan(layout, memory, time, vocab))
    result.plans.sort(key=lambda p: (p.time.step_s, p.memory.total))
    return result
