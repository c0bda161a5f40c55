"""Turns planner results into a ranked text table, a one-layout report, a verdict on the project
spec's compute claim, and JSON.

Formatting only: every number comes from search.py, memory.py and step_time.py.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import List, Optional, Tuple

from megatron_sota.model.param_count import count_params, format_count
from megatron_sota.planning.search import Plan, PlanRequest, Rejection, SearchResult, best_per_sharding
from megatron_sota.planning.step_time import budget_flops

DAYS_PER_MONTH = 30.44


@dataclass(frozen=True)
class SpecClaim:
    """The project spec: "150-200B dense, 15-20T tokens, 1000-2000 H100s, 3-6 months, ~1e25-1e26 FLOPs"."""

    params: Tuple[float, float] = (150e9, 200e9)
    tokens: Tuple[float, float] = (15e12, 20e12)
    gpus: Tuple[int, int] = (1000, 2000)
    days: Tuple[float, float] = (3 * DAYS_PER_MONTH, 6 * DAYS_PER_MONTH)
    flops: Tuple[float, float] = (1e25, 1e26)


def _tokens(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _memory_cell(plan: Plan) -> str:
    b = plan.memory.breakdown_gib()
    return (
        f"{b['total']:5.1f} = {b['weights']:.1f}w {b['gradients']:.1f}g {b['optimizer']:.1f}o "
        f"{b['activations']:.1f}a {b['logits']:.1f}l {b['transient']:.1f}t"
    )


def format_table(plans: List[Plan], tokens: float, ranks: Optional[List[int]] = None) -> str:
    """One row per plan; `ranks` numbers the rows (default 1, 2, ...), e.g. their place in a longer ranking."""
    header = f"{'#':>3}  {'layout':<46} {'GiB/GPU = weights grads optim activ logits transient':<53} {'step s':>7} {'MFU':>6} {'tokens/day':>10} {'days':>7}"
    lines = [header, "-" * len(header)]
    for i, plan in zip(ranks or range(1, len(plans) + 1), plans):
        t = plan.time
        lines.append(
            f"{i:>3}  {plan.layout.short():<46} {_memory_cell(plan):<53} {t.step_s:7.2f} {t.mfu:6.1%} "
            f"{_tokens(t.tokens_per_day):>10} {t.days_for(tokens):7.1f}"
        )
    return "\n".join(lines)


def format_best_per_sharding(result: SearchResult, tokens: float) -> str:
    """The fastest layout of each data-parallel sharding, numbered by its place in the whole ranking."""
    best = best_per_sharding(result.plans)
    place = {id(plan): i for i, plan in enumerate(result.plans, 1)}
    title = "fastest of each sharding (opt/dopt: DDP without/with distributed optimizer; zero1-3: Megatron-FSDP optim/optim_grads/optim_grads_params):"
    return title + "\n" + format_table(best, tokens, [place[id(plan)] for plan in best])


def format_plan(plan: Plan, problems: List[Rejection], tokens: float) -> str:
    """The --layout report: full breakdown of memory and time, then why it cannot run, if it cannot."""
    m, t = plan.memory, plan.time
    b = m.breakdown_gib()
    lines = [
        f"layout      {plan.layout.short()}  (world {plan.layout.world_size}, {plan.layout.num_microbatches} micro-batches/step, global batch {plan.layout.global_batch_size})",
        f"memory      {b['total']:.2f} GiB on pipeline rank {m.pipeline_rank}, peak during {m.phase}",
        f"            weights {b['weights']:.2f}  gradients {b['gradients']:.2f}  optimizer {b['optimizer']:.2f}  "
        f"activations {b['activations']:.2f}  logits {b['logits']:.2f}  transient {b['transient']:.2f}",
        f"step        {t.step_s:.3f} s: compute {t.compute_s:.3f} (recompute {t.recompute_s:.3f}), TP {t.tp_comm_s:.3f}, "
        f"PP {t.pp_comm_s:.3f}, CP {t.cp_comm_s:.3f}, bubble {t.bubble_s:.3f}, DP exposed {t.dp_comm_s:.3f}, optimizer {t.optimizer_s:.3f}",
        f"throughput  {t.tokens_per_s:,.0f} tokens/s, {_tokens(t.tokens_per_day)} tokens/day, MFU {t.mfu:.1%}, "
        f"{t.days_for(tokens):.1f} days for {_tokens(tokens)} tokens",
    ]
    if problems:
        lines.append("INFEASIBLE:")
        lines += [f"  - {p.message}" for p in problems]
    else:
        lines.append("feasible")
    return "\n".join(lines)


def format_rejections(rejections: List[Rejection], per_kind: int = 3) -> str:
    by_kind = defaultdict(list)
    for r in rejections:
        by_kind[r.kind].append(r)
    lines = [f"rejected layouts: {len(rejections)}"]
    for kind, items in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {kind} ({len(items)}):")
        lines += [f"    {r.where}: {r.message}" for r in items[:per_kind]]
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    params: int
    tokens: float
    gpus: int
    days: Optional[float]
    """Of the fastest feasible plan; None when no layout fits."""
    flops_6nd: float
    flops: float
    """6*N*D plus attention (12*L*h*s per token)."""
    gpus_for_max_days: Optional[float]
    """GPUs the fastest plan would need to finish within the claim's upper bound, at its MFU."""
    claim: SpecClaim

    def checks(self) -> dict:
        def inside(value, bounds):
            return value is not None and bounds[0] <= value <= bounds[1]

        return {
            "params": inside(self.params, self.claim.params),
            "tokens": inside(self.tokens, self.claim.tokens),
            "gpus": inside(self.gpus, self.claim.gpus),
            "days": inside(self.days, self.claim.days),
            "flops": inside(self.flops, self.claim.flops),
        }

    def line(self) -> str:
        ok = self.checks()
        mark = {True: "yes", False: "NO"}
        c = self.claim
        days = f"{self.days:.0f} days ({self.days / DAYS_PER_MONTH:.1f} months)" if self.days is not None else "no feasible layout"
        text = (
            f"Spec claim (150-200B dense, 15-20T tokens, 1000-2000 H100s, 3-6 months, 1e25-1e26 FLOPs): "
            f"{format_count(self.params)} params [{mark[ok['params']]}], {_tokens(self.tokens)} tokens [{mark[ok['tokens']]}], "
            f"{self.gpus} GPUs [{mark[ok['gpus']]}], best plan {days} [{mark[ok['days']]} for {c.days[0]:.0f}-{c.days[1]:.0f} days], "
            f"{self.flops:.2e} FLOPs (6ND {self.flops_6nd:.2e}) [{mark[ok['flops']]} for {c.flops[0]:.0e}-{c.flops[1]:.0e}]."
        )
        if not ok["days"] and self.gpus_for_max_days:
            text += f" At the best plan's MFU, {c.days[1]:.0f} days need ~{self.gpus_for_max_days:,.0f} GPUs."
        return text


def verdict(request: PlanRequest, result: SearchResult, tokens: float, claim: SpecClaim = SpecClaim()) -> Verdict:
    vocab = request.padded_vocab(1)
    params = count_params(request.model, vocab).total
    flops_6nd, flops = budget_flops(request.model, vocab, request.seq_length, tokens)
    best = result.plans[0] if result.plans else None
    days = best.time.days_for(tokens) if best else None
    needed = None
    if best:
        per_gpu = best.time.mfu * request.cluster.gpu.bf16_tflops * 1e12  # model FLOP/s per GPU
        needed = flops / (per_gpu * claim.days[1] * 86_400.0)
    return Verdict(params, tokens, request.cluster.world_size, days, flops_6nd, flops, needed, claim)


def plan_json(plan: Plan, tokens: float) -> dict:
    t = plan.time
    return {
        "layout": dataclasses.asdict(plan.layout),
        "memory_gib": plan.memory.breakdown_gib(),
        "memory_peak_rank": plan.memory.pipeline_rank,
        "memory_peak_phase": plan.memory.phase,
        "step_s": t.step_s,
        "step_breakdown_s": {
            "compute": t.compute_s, "recompute": t.recompute_s, "tp": t.tp_comm_s, "pp": t.pp_comm_s,
            "cp": t.cp_comm_s, "bubble": t.bubble_s, "dp_exposed": t.dp_comm_s, "optimizer": t.optimizer_s,
        },
        "tokens_per_s": t.tokens_per_s,
        "tokens_per_day": t.tokens_per_day,
        "mfu": t.mfu,
        "days_for_budget": t.days_for(tokens),
    }


def result_json(request: PlanRequest, result: SearchResult, tokens: float, top: int) -> dict:
    v = verdict(request, result, tokens)
    kinds = defaultdict(int)
    for r in result.rejections:
        kinds[r.kind] += 1
    return {
        "model": request.model.name,
        "gpu": request.cluster.gpu.name,
        "gpus": request.cluster.world_size,
        "gpus_per_node": request.cluster.gpus_per_node,
        "seq_length": request.seq_length,
        "global_batch_size": request.global_batch_size,
        "tokens": tokens,
        "plans": [plan_json(p, tokens) for p in result.plans[:top]],
        "best_per_sharding": {p.layout.sharding: plan_json(p, tokens) for p in best_per_sharding(result.plans)},
        "feasible": len(result.plans),
        "rejected_by_kind": dict(kinds),
        "verdict": {**dataclasses.asdict(v), "checks": v.checks(), "line": v.line()},
    }
