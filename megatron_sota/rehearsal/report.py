"""The rehearsal as a table (one row per rank) or JSON; printing is the CLI's."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence, Tuple

from megatron_sota.config.job import JobConfig
from megatron_sota.rehearsal.run import Rehearsal

GIB = 2**30


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def layer_spans(spans: Sequence[Tuple[int, int]]) -> str:
    """'1-13' for one chunk, '13 chunks: 1, 9, ..., 97' (first layers) for interleaved stages."""
    spans = [s for s in spans if s[1] >= s[0]]
    if not spans:
        return "-"
    if len(spans) == 1:
        first, last = spans[0]
        return f"{first}-{last}" if last > first else str(first)
    firsts = [str(first) for first, _ in spans]
    shown = ", ".join(firsts if len(firsts) <= 4 else [*firsts[:2], "...", firsts[-1]])
    return f"{len(spans)} chunks from {shown}"


def layout_line(job: JobConfig, world_size: int) -> str:
    p, t = job.parallel, job.train
    dp = world_size // (p.tp * p.pp * p.cp)
    return (
        f"{job.model.name} on {world_size} GPUs: tp{p.tp} pp{p.pp} vpp{p.vpp or 1} cp{p.cp} dp{dp}"
        f"{' sp' if p.sp else ''}, {t.recompute} recompute, {'distributed' if p.distributed_optimizer else 'replicated'} "
        f"optimizer, seq {t.seq_length}, micro-batch {t.micro_batch_size}, global batch {t.global_batch_size}"
    )


def _row(r: Rehearsal) -> Dict[str, str]:
    rank = r.rank
    c = rank.coordinates
    row = {
        "rank": str(rank.rank),
        "tp/pp/cp/dp": f"{c['tp']}/{c['pp']}/{c['cp']}/{c['dp']}",
        "layers": layer_spans(rank.chunk_layers),
        "parameters": f"{rank.parameters:,}",
        "weights": _gib(rank.weight_bytes),
        "grads": _gib(rank.gradient_bytes),
        "master": _gib(rank.master_bytes),
        "adam": _gib(rank.optimizer_state_bytes),
        "static": _gib(rank.static_bytes),
        "ckpt shards": str(len(rank.checkpoint_shards)),
        "ckpt write": _gib(rank.checkpoint_bytes),
        "save host": _gib(rank.save_host_bytes),
    }
    if r.activations is not None:
        a = r.activations
        row["mb stored"] = _gib(a.stored_bytes)
        row["mb peak"] = _gib(a.peak_bytes)
        row["in flight"] = str(r.inflight)
        row["peak"] = _gib(rank.static_bytes + a.persistent_bytes + (r.inflight - 1) * a.stored_bytes + a.peak_bytes)
    if r.init is not None:
        row["init s"] = f"{r.init.total_seconds:.1f}"
    row["build s"] = f"{rank.build_seconds:.1f}"
    return row


def format_rehearsal(job: JobConfig, results: List[Rehearsal], shards: bool = False) -> str:
    """A header line, one row per rank (GiB unless said), the shards when asked, and what each column means."""
    rows = [_row(r) for r in results]
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = [layout_line(job, results[0].rank.world_size) + f"; padded vocabulary {results[0].rank.padded_vocab:,}"]
    lines.append("  ".join(c.rjust(widths[c]) for c in columns))
    lines += ["  ".join(row.get(c, "").rjust(widths[c]) for c in columns) for row in rows]
    if shards:
        for r in results:
            lines.append(f"rank {r.rank.rank} writes {len(r.rank.checkpoint_shards)} shards:")
            for s in r.rank.checkpoint_shards:
                where = f" flat {s.flattened_range[0]}:{s.flattened_range[1]}" if s.flattened_range else ""
                lines.append(f"  {s.key} offset {s.global_offset} shape {s.local_shape}{where} {s.dtype} {s.nbytes:,} B")
    lines.append(
        "GiB per GPU. weights: parameters (the distributed optimizer's padded buffers); grads: fp32 main-gradient "
        "buffers; master/adam: the optimizer's fp32 copies and moments on this rank; ckpt write: what this rank writes "
        "in a save; save host: host memory a save gathers on this rank (optimizer state of its whole data-parallel group)"
        + ("; mb stored / mb peak: one micro-batch through the rank's heaviest chunk under fake tensors, what its "
           "forward keeps for the backward and its peak; in flight: chunk forwards the schedule holds at once; peak: "
           "static + persistent buffers + (in flight - 1) x stored + the last one's peak"
           if results[0].activations is not None else "")
        + ("; init s: real initialisation on this CPU, extrapolated from one layer" if results[0].init is not None else "")
    )
    return "\n".join(lines)


def rehearsal_json(job: JobConfig, results: List[Rehearsal], shards: bool = False) -> Dict[str, Any]:
    out = []
    for r in results:
        rank = dataclasses.asdict(r.rank)
        if not shards:
            rank["checkpoint_shards"] = len(r.rank.checkpoint_shards)
        rank.update(static_bytes=r.rank.static_bytes, checkpoint_bytes=r.rank.checkpoint_bytes)
        out.append({
            "rank": rank,
            "activations": dataclasses.asdict(r.activations) if r.activations is not None else None,
            "inflight_chunks": r.inflight,
            "init": dataclasses.asdict(r.init) if r.init is not None else None,
        })
    return {"layout": layout_line(job, results[0].rank.world_size), "ranks": out}
