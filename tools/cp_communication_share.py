#!/usr/bin/env python
"""How much of one layer's CP attention is the exposed K/V all-gather and gradient reduction: measured on CPU ranks
(gloo), and in closed form for a model on a GPU cluster. This bounds what a ring (same bytes, overlapped) could save;
--compare times the two exchanges (parallel.cp_comm_type all_gather and p2p) end to end on gloo ranks.

  python tools/cp_communication_share.py --measure --seq 16384 --cp 2 4            # gloo ranks on this machine
  python tools/cp_communication_share.py --compare --seq 16384 --cp 2 4            # all_gather against p2p
  python tools/cp_communication_share.py --preset sota_175b --tp 4 --plan 32768:16 204800:64

Closed form (bf16 K/V, micro-batch 1): each CP rank receives (cp-1)/cp of the sequence's K and V in the forward's
all-gather, the same again in the backward's, and reduces dK and dV (in fp32, as the CP attention sums them) of that
size; attention FLOPs per rank are the causal 2*s^2*d*heads/cp forward and 2.5 times that backward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def closed_form(seq, cp, tp, heads, kv_heads, head_dim, link_gb_s, tflops) -> dict:
    heads_local, kv_local = heads // tp, kv_heads // tp
    received = (cp - 1) / cp * seq * kv_local * head_dim * 2  # K and V elements each rank receives
    gather_ms = received * 2 / (link_gb_s * 1e9) * 1e3  # bf16
    reduce_ms = received * 4 / (link_gb_s * 1e9) * 1e3  # fp32 gradients
    forward_ms = 2 * seq ** 2 * head_dim * heads_local / cp / (tflops * 1e12) * 1e3
    return {
        "seq": seq, "cp": cp, "tp": tp, "kv_bytes_per_rank_MB": received * 2 / 1e6,
        "fwd_gather_ms": gather_ms, "fwd_attention_ms": forward_ms, "fwd_exposed_share": gather_ms / forward_ms,
        "bwd_comm_ms": gather_ms + reduce_ms, "bwd_attention_ms": 2.5 * forward_ms,
        "bwd_exposed_share": (gather_ms + reduce_ms) / (2.5 * forward_ms),
    }


def _measure_rank(rank, seq, heads, kv_heads, head_dim, repeats):
    import torch
    import torch.distributed as dist

    from megatron_sota.model import context_parallel_attention as cpa

    dist.init_process_group("gloo")
    cp, group = dist.get_world_size(), dist.group.WORLD
    local = seq // cp
    torch.manual_seed(rank)
    q = torch.randn(local, 1, heads, head_dim)
    k, v = torch.randn(local, 1, kv_heads, head_dim), torch.randn(local, 1, kv_heads, head_dim)
    times = {"gather": [], "attention_fwd": [], "attention_bwd": [], "reduce": []}
    for _ in range(repeats + 1):  # the first round warms up
        dist.barrier()
        t0 = time.perf_counter()
        k_all, v_all, _ = cpa._gather_keys(k, v, None, group)
        t1 = time.perf_counter()
        q_r = cpa._heads_first(q, kv_heads)
        out, lse = cpa.attend_forward(q_r, k_all, v_all, rank, cp, head_dim ** -0.5)
        t2 = time.perf_counter()
        _, dk, dv = cpa.attend_backward(q_r, q_r, k_all, v_all, out, lse, rank, cp, head_dim ** -0.5)
        t3 = time.perf_counter()
        dist.barrier()  # the reduction waits for the slowest rank's compute: not communication
        t4 = time.perf_counter()
        for t in (dk, dv):
            cpa._reduce_to_owner(t.permute(2, 0, 1, 3).contiguous(), group)
        t5 = time.perf_counter()
        for name, ms in zip(times, ((t1 - t0), (t2 - t1), (t3 - t2), (t5 - t4))):
            times[name].append(ms * 1e3)
    dist.destroy_process_group()
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def _compare_rank(rank, seq, heads, kv_heads, head_dim, repeats):
    import torch
    import torch.distributed as dist

    from megatron_sota.config.parallel import CP_COMM_TYPES
    from megatron_sota.model.context_parallel_attention import context_parallel_attention

    dist.init_process_group("gloo")
    cp, group = dist.get_world_size(), dist.group.WORLD
    local = seq // cp
    torch.manual_seed(rank)
    q = torch.randn(local, 1, heads, head_dim, requires_grad=True)
    k, v = (torch.randn(local, 1, kv_heads, head_dim, requires_grad=True) for _ in range(2))
    times = {f"{comm}_{part}": [] for comm in CP_COMM_TYPES for part in ("fwd", "bwd")}
    for _ in range(repeats + 1):  # the first round warms up
        for comm in CP_COMM_TYPES:
            dist.barrier()
            t0 = time.perf_counter()
            out = context_parallel_attention(q, k, v, group, head_dim ** -0.5, None, comm)
            t1 = time.perf_counter()
            out.backward(torch.ones_like(out))
            t2 = time.perf_counter()
            times[f"{comm}_fwd"].append((t1 - t0) * 1e3)
            times[f"{comm}_bwd"].append((t2 - t1) * 1e3)
    dist.destroy_process_group()
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def exchange_buffers_mb(seq, cp, kv_heads, head_dim, bytes_per=4) -> dict:
    """K/V-sized buffers one rank holds at once in the backward (the larger phase), in MB.

    all_gather: K and V of every rank, and fp32 dK and dV for every rank's keys before the reduction (4 * cp local).
    p2p: the held and the arriving K and V (4), this step's dK and dV and the arriving partial sums (4).
    """
    local = seq // cp * kv_heads * head_dim * bytes_per / 1e6
    return {"all_gather_buffers_MB": 4 * cp * local, "p2p_buffers_MB": 8 * local}


def compare(seq, cp, heads, kv_heads, head_dim, repeats) -> dict:
    from megatron_sota.runtime.local_ranks import run_distributed

    ranks = run_distributed(_compare_rank, cp, seq, heads, kv_heads, head_dim, repeats)
    worst = {name: max(r[name] for r in ranks) for name in ranks[0]}
    return {"seq": seq, "cp": cp, **{f"{name}_ms": ms for name, ms in worst.items()},
            **exchange_buffers_mb(seq, cp, kv_heads, head_dim)}


def measure(seq, cp, heads, kv_heads, head_dim, repeats) -> dict:
    from megatron_sota.runtime.local_ranks import run_distributed

    ranks = run_distributed(_measure_rank, cp, seq, heads, kv_heads, head_dim, repeats)
    worst = {name: max(r[name] for r in ranks) for name in ranks[0]}
    return {
        "seq": seq, "cp": cp, **{f"{name}_ms": ms for name, ms in worst.items()},
        "fwd_exposed_share": worst["gather"] / worst["attention_fwd"],
        "bwd_exposed_share": (worst["gather"] + worst["reduce"]) / worst["attention_bwd"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="time gloo ranks on this machine")
    parser.add_argument("--compare", action="store_true", help="time all_gather against p2p on gloo ranks")
    parser.add_argument("--seq", type=int, default=16384)
    parser.add_argument("--cp", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default=None, help="a file name in conf/model/ for the closed form")
    parser.add_argument("--tp", type=int, default=4)
    parser.add_argument("--plan", nargs="*", default=["32768:16", "204800:64"], help="seq:cp pairs")
    parser.add_argument("--link-gb-s", type=float, default=50.0, help="per-GPU bandwidth of the CP group's slowest link")
    parser.add_argument("--tflops", type=float, default=400.0, help="attention kernels' effective TFLOP/s")
    args = parser.parse_args()
    rows = []
    if args.measure:
        rows += [measure(args.seq, cp, args.heads, args.kv_heads, args.head_dim, args.repeats) for cp in args.cp]
    if args.compare:
        rows += [compare(args.seq, cp, args.heads, args.kv_heads, args.head_dim, args.repeats) for cp in args.cp]
    if args.preset:
        import yaml

        from megatron_sota.config.files import conf_dir

        with open(os.path.join(conf_dir(), "model", f"{args.preset}.yaml"), encoding="utf-8") as f:
            model = yaml.safe_load(f)
        heads, kv = model["num_attention_heads"], model["num_query_groups"]
        head_dim = model.get("kv_channels") or model["hidden_size"] // heads
        for pair in args.plan:
            seq, cp = (int(x) for x in pair.split(":"))
            rows.append(closed_form(seq, cp, args.tp, heads, kv, head_dim, args.link_gb_s, args.tflops))
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
