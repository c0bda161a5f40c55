#!/usr/bin/env python
"""Checks and times the CP attention's per-rank share on one device against plain SDPA over the whole sequence.

Every CP rank's share is computed on this one device (no process group): fused blocks, matmul blocks and bf16
SDPA are each compared with an fp32 reference in output and gradients; then one rank's fused forward+backward is
timed against SDPA's over the whole sequence. Part of examples/gpu/h200_speed_run.sh; on CPU too:

  python examples/gpu/cp_attention_check.py                          # GPU: seq 32,768, 32 q / 8 kv heads, d 128
  python examples/gpu/cp_attention_check.py --device cpu --seq 2048 --heads 8 --kv-heads 2 --json out.json

Prints a markdown table on stdout (and --json writes every number); exits 1 if a comparison fails its tolerance:
each CP variant's error may be at most twice bf16 SDPA's own error against the same fp32 reference, plus 1e-3,
and SDPA's at most SDPA_MAX_ERROR.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from megatron_sota.model.context_parallel_attention import _heads_first, _seq_first, attend_backward, attend_forward
from megatron_sota.model.fused_attention_block import fused_block_kernel

log = logging.getLogger("cp_attention_check")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SDPA_MAX_ERROR = 0.05  # bf16 SDPA's max error relative to the fp32 result's largest value (measured: ~1e-2 at most)


def rank_positions(rank: int, cp: int, seq: int, device) -> torch.Tensor:
    """The sequence positions CP rank `rank` holds: chunks rank and 2*cp-1-rank of 2*cp (megatron-core's split)."""
    c = seq // (2 * cp)
    return torch.cat([torch.arange(i * c, (i + 1) * c, device=device) for i in (rank, 2 * cp - 1 - rank)])


def sdpa(q, k, v):
    """Full causal attention, [b, heads, s, d] / [b, kv_heads, s, d]; fused kernels only on CUDA (never a s x s matrix)."""
    if q.device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(fused):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except RuntimeError:  # no fused kernel takes grouped heads here: expand them (the same result)
            group = q.size(1) // k.size(1)
            k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def full_attention(q, k, v, d_out):
    """SDPA's output and gradients over the whole sequence ([b, heads, s, d] in and out)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = sdpa(q, k, v)
    out.backward(d_out)
    return out.detach(), q.grad, k.grad, v.grad


def cp_attention(q, k, v, d_out, cp, fused):
    """Every rank's share computed here, reassembled in sequence order: out, dq, dk, dv ([b, heads, s, d])."""
    b, heads, seq, d = q.shape
    kv_heads, scale = k.size(1), d ** -0.5
    order = torch.cat([rank_positions(r, cp, seq, q.device) for r in range(cp)])
    k_all, v_all = k[:, :, order], v[:, :, order]  # what the all-gather gives: rank order
    out, dq = torch.empty_like(q, dtype=torch.float32), torch.empty_like(q, dtype=torch.float32)
    dk_all = dv_all = 0
    for rank in range(cp):
        mine = rank_positions(rank, cp, seq, q.device)
        q_r, do_r = (_heads_first(t[:, :, mine].permute(2, 0, 1, 3), kv_heads) for t in (q, d_out))
        o, lse = attend_forward(q_r, k_all, v_all, rank, cp, scale, fused=fused)
        dq_r, dk, dv = attend_backward(do_r, q_r, k_all, v_all, o, lse, rank, cp, scale, fused=fused)
        out[:, :, mine], dq[:, :, mine] = (_seq_first(t).permute(1, 2, 0, 3).float() for t in (o, dq_r))
        dk_all, dv_all = dk_all + dk.float(), dv_all + dv.float()
    dk, dv = torch.empty_like(dk_all), torch.empty_like(dv_all)
    dk[:, :, order], dv[:, :, order] = dk_all, dv_all
    return out, dq, dk, dv


def relative_error(got, want) -> float:
    return ((got.float() - want).abs().max() / want.abs().max()).item()


def time_ms(fn, device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in ms, after warm-up (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def rank_share(q, k, v, d_out, cp):
    """One rank's (rank 0's; every rank has the same causal work) fused forward+backward, as a callable."""
    kv_heads, scale, seq = k.size(1), q.size(-1) ** -0.5, q.size(2)
    mine = rank_positions(0, cp, seq, q.device)
    order = torch.cat([rank_positions(r, cp, seq, q.device) for r in range(cp)])
    k_all, v_all = k[:, :, order].contiguous(), v[:, :, order].contiguous()
    q_r, do_r = (_heads_first(t[:, :, mine].permute(2, 0, 1, 3), kv_heads) for t in (q, d_out))

    def run():
        o, lse = attend_forward(q_r, k_all, v_all, 0, cp, scale)
        attend_backward(do_r, q_r, k_all, v_all, o, lse, 0, cp, scale)

    return run


def check(args, device, dtype) -> tuple[list[dict], bool]:
    gen = torch.Generator(device=device).manual_seed(0)
    make = lambda h: torch.randn(args.batch, h, args.seq, args.head_dim, generator=gen, device=device).to(dtype)  # noqa: E731
    q, k, v = make(args.heads), make(args.kv_heads), make(args.kv_heads)
    d_out = torch.randn(q.shape, generator=gen, device=device).to(dtype)
    reference = full_attention(*(t.float() for t in (q, k, v, d_out)))
    errors = lambda results: [relative_error(g, w) for g, w in zip(results, reference)]  # noqa: E731
    sdpa_errors = errors(full_attention(q, k, v, d_out))
    ok = all(e <= SDPA_MAX_ERROR for e in sdpa_errors)  # else the fp32 reference itself is wrong
    sdpa_fwd_bwd = time_ms(lambda: full_attention(q, k, v, d_out), device, args.warmup, args.repeats)
    rows = [{"variant": "sdpa (whole sequence)", "cp": 1, "errors": sdpa_errors, "fwd_bwd_ms": sdpa_fwd_bwd, "passed": ok}]
    kernel = fused_block_kernel(device, dtype, args.heads, args.head_dim)
    for cp in args.cp:
        for fused in (True, False):
            result = errors(cp_attention(q, k, v, d_out, cp, fused))
            passed = all(e <= 2 * s + 1e-3 for e, s in zip(result, sdpa_errors))
            ok &= passed
            name = f"cp blocks: {'fused ' + kernel_name(kernel) if fused else 'matmul'}"
            row = {"variant": name, "cp": cp, "errors": result, "passed": passed}
            if fused:
                row["fwd_bwd_ms"] = time_ms(rank_share(q, k, v, d_out, cp), device, args.warmup, args.repeats)
                row["vs_sdpa_over_cp"] = row["fwd_bwd_ms"] / (sdpa_fwd_bwd / cp)
            rows.append(row)
            log.info("%s cp=%d done", name, cp)
    return rows, ok


def kernel_name(kernel) -> str:
    if kernel is None:
        return "(none: matmul)"
    return {"_flash_forward": "flash", "_efficient_forward": "efficient"}.get(kernel.forward.__name__, "cpu flash")


def table(rows) -> str:
    lines = [
        "| variant | cp | max rel. err out / dq / dk / dv vs fp32 | fwd+bwd ms (one rank's share) | / (SDPA ms / cp) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        errs = " / ".join(f"{e:.1e}" for e in r["errors"]) + ("" if r.get("passed", True) else " FAIL")
        ms = f"{r['fwd_bwd_ms']:.1f}" if "fwd_bwd_ms" in r else "-"
        ratio = f"{r['vs_sdpa_over_cp']:.2f}" if "vs_sdpa_over_cp" in r else "-"
        lines.append(f"| {r['variant']} | {r['cp']} | {errs} | {ms} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--cp", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write every number to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if any(args.seq % (2 * cp) for cp in args.cp):
        parser.error(f"--seq {args.seq} must split into 2*cp chunks for every --cp {args.cp}")
    rows, ok = check(args, device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"CP attention on {name}, torch {torch.__version__}, {args.dtype}, seq {args.seq}, batch {args.batch}, "
          f"{args.heads} q / {args.kv_heads} kv heads, d {args.head_dim}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": name, "torch": torch.__version__, "args": vars(args), "rows": rows, "passed": ok}, f,
                      indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
