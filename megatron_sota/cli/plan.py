"""CLI: ranks parallel layouts of a model preset on a GPU cluster by estimated throughput, with memory per GPU.

Argument parsing and printing only (`megatron-sota-plan`, tools/plan.py); the estimates are megatron_sota.planning:

  python tools/plan.py --model sota_175b --gpu h100-80gb --gpus-per-node 8 --nodes 128 --tokens 15e12
  python tools/plan.py --model sota_175b --nodes 128 --layout tp=8,pp=8,mbs=1,recompute=selective
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from megatron_sota.quiet import quiet_megatron

quiet_megatron()

from megatron_sota.errors import MegatronSotaError  # noqa: E402
from megatron_sota.planning.cluster import GPUS, build_cluster  # noqa: E402
from megatron_sota.planning.layout import DTYPES, FSDP, ParallelLayout, parse_layout  # noqa: E402
from megatron_sota.planning.memory import OPTIMIZER_KERNELS  # noqa: E402
from megatron_sota.config.presets import load_model_preset  # noqa: E402
from megatron_sota.planning.report import (  # noqa: E402
    format_best_per_sharding,
    format_plan,
    format_rejections,
    format_table,
    plan_json,
    result_json,
    verdict,
)
from megatron_sota.planning.search import MIN_CP_TOKENS, PlanRequest, SearchSpace, evaluate, search  # noqa: E402
from megatron_sota.planning.step_time import Efficiency  # noqa: E402
from megatron_sota.runtime.log import add_verbose_flag, setup_logging  # noqa: E402

log = logging.getLogger("megatron_sota.cli.plan")  # not __name__: that is "__main__" under -m


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got '{text}'") from None


def _strategies(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in FSDP]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated strategies among {', '.join(FSDP)}, got '{text}'")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sota_175b", help="a preset of conf/model/")
    parser.add_argument("--gpu", default="h100-80gb", choices=sorted(GPUS))
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=128)
    parser.add_argument("--tokens", type=float, default=15e12, help="training budget in tokens")
    parser.add_argument("--seq-length", type=int, default=None, help="default: the preset's max_position_embeddings")
    parser.add_argument("--global-batch-tokens", type=int, default=2**24, help="tokens per optimizer step (default 16,777,216)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--layout", default=None, help="evaluate one layout, e.g. tp=8,pp=8,vpp=1,mbs=1,recompute=full,dopt=1,fsdp=none")
    parser.add_argument("--show-rejected", action="store_true", help="print a sample of rejected layouts per reason")
    parser.add_argument("--verify", type=int, nargs="?", const=5, default=0, metavar="N",
                        help="rehearse the top N layouts (default 5; the --layout one) on this CPU and print the estimate "
                             "beside the rehearsal per memory term (tools/rehearse.py); exit code 1 on a mismatch")
    space = parser.add_argument_group("search space")
    space.add_argument("--micro-batch-sizes", type=_ints, default=[1, 2, 4])
    space.add_argument("--cp", type=_ints, default=None,
                       help=f"context-parallel sizes to try (default: 1, 2, 4, ... while each rank keeps >= {MIN_CP_TOKENS} tokens)")
    space.add_argument("--max-vpp", type=int, default=16)
    space.add_argument("--fsdp", type=_strategies, default=list(SearchSpace.fsdp),
                       help=f"parallel.fsdp strategies to try (default: {','.join(SearchSpace.fsdp)}; optim adds Megatron-FSDP's ZeRO-1)")
    model = parser.add_argument_group("efficiency and hardware assumptions")
    model.add_argument("--matmul-efficiency", type=float, default=Efficiency.matmul)
    model.add_argument("--attention-efficiency", type=float, default=Efficiency.attention)
    model.add_argument("--memory-fraction", type=float, default=0.9, help="share of GPU memory the estimate may fill")
    model.add_argument("--optimizer-kernel", default="fused", choices=OPTIMIZER_KERNELS)
    model.add_argument("--no-dp-overlap", action="store_true", help="DP collectives fully exposed (overlap_grad_reduce off)")
    model.add_argument("--intra-node-gb-s", type=float, default=None, help="NVLink GB/s per GPU and direction")
    model.add_argument("--inter-node-gb-s", type=float, default=None, help="network GB/s per GPU and direction")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def _request(args: argparse.Namespace) -> PlanRequest:
    model = load_model_preset(args.model)
    seq = args.seq_length or model.max_position_embeddings
    if args.global_batch_tokens % seq:
        raise MegatronSotaError(f"--global-batch-tokens {args.global_batch_tokens} is not a multiple of --seq-length {seq}")
    cluster = build_cluster(args.gpu, args.gpus_per_node, args.nodes, args.intra_node_gb_s, args.inter_node_gb_s)
    efficiency = Efficiency(matmul=args.matmul_efficiency, attention=args.attention_efficiency, dp_overlap=not args.no_dp_overlap)
    return PlanRequest(
        model=model, cluster=cluster, seq_length=seq, global_batch_size=args.global_batch_tokens // seq,
        dtype=args.dtype, efficiency=efficiency, memory_fraction=args.memory_fraction, optimizer_kernel=args.optimizer_kernel,
    )


def _one_layout(request: PlanRequest, text: str) -> ParallelLayout:
    """The --layout text with dp, micro-batches and sp derived from the cluster and batch when not given."""
    given = {item.split("=")[0].strip() for item in text.split(",") if item.strip()}
    layout = parse_layout(text, seq_length=request.seq_length, dtype=request.dtype)
    derived = {}
    if "dp" not in given:
        derived["dp"] = max(1, request.cluster.world_size // (layout.tp * layout.pp * layout.cp))
    if "sp" not in given:
        derived["sp"] = layout.tp > 1
    layout = dataclasses.replace(layout, **derived)
    if "num_microbatches" not in given:
        m = max(1, request.global_batch_size // (layout.micro_batch_size * layout.dp))
        layout = dataclasses.replace(layout, num_microbatches=m)
    return layout


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("DEBUG" if args.verbose else "INFO", info_stream="stderr")
    try:
        request = _request(args)
        if args.layout:
            plan, problems = evaluate(request, _one_layout(request, args.layout))
            checks = _verify(request, [plan.layout], args) if args.verify and not problems else []
            if args.json:
                out = {**plan_json(plan, args.tokens), "problems": [p.__dict__ for p in problems]}
                print(json.dumps({**out, **_checks_json(checks)} if args.verify else out, indent=2))
            else:
                print(format_plan(plan, problems, args.tokens))
                _print_checks(checks)
            return 1 if problems or not all(c.ok for c in checks) else 0
        space = SearchSpace(micro_batch_sizes=args.micro_batch_sizes, cp=args.cp, max_vpp=args.max_vpp, fsdp=args.fsdp)
        result = search(request, space)
        checks = _verify(request, [p.layout for p in result.plans[: args.verify]], args) if args.verify else []
    except MegatronSotaError as err:
        log.error("%s", err)
        return 2
    verified = 0 if all(c.ok for c in checks) else 1
    if args.json:
        out = result_json(request, result, args.tokens, args.top)
        print(json.dumps({**out, **_checks_json(checks)} if args.verify else out, indent=2))
        return verified
    c = request.cluster
    print(
        f"{request.model.name} on {c.world_size} x {c.gpu.name} ({c.nodes} nodes x {c.gpus_per_node}), seq {request.seq_length}, "
        f"global batch {request.global_batch_size} x {request.seq_length} = {request.global_batch_size * request.seq_length:,} tokens, "
        f"{request.dtype}, budget {args.tokens:.3g} tokens"
    )
    print(f"{len(result.plans)} feasible layouts, {len(result.rejections)} rejected; top {min(args.top, len(result.plans))}:")
    print(format_table(result.plans[: args.top], args.tokens))
    if result.plans:
        print(format_best_per_sharding(result, args.tokens))
    if args.show_rejected:
        print(format_rejections(result.rejections))
    print(verdict(request, result, args.tokens).line())
    _print_checks(checks)
    return verified


def _verify(request: PlanRequest, layouts: list, args: argparse.Namespace) -> list:
    """Rehearses each layout (megatron_sota/rehearsal/verify.py); a few seconds each on a 2-core machine."""
    from megatron_sota.rehearsal.verify import verify_layout

    checks = []
    for index, layout in enumerate(layouts, 1):
        if layout.fsdp != "none":
            log.warning("not rehearsed: %s (the rehearsal builds DDP layouts only, parallel.fsdp=none)", layout.short())
            continue
        log.info("rehearsing %d/%d: %s", index, len(layouts), layout.short())
        checks.append(verify_layout(request, layout))
    return checks


def _print_checks(checks: list) -> None:
    if not checks:
        return
    from megatron_sota.rehearsal.verify import format_checks

    print(f"\nestimate vs rehearsal (static terms must be equal, activations within 10%):\n{format_checks(checks)}")


def _checks_json(checks: list) -> dict:
    from megatron_sota.rehearsal.verify import checks_json

    return {"verify": checks_json(checks)}


if __name__ == "__main__":
    sys.exit(main())
