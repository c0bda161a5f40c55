"""Causal attention over a sequence split across the context-parallel ranks, without Transformer Engine.

K/V are all-gathered or passed around the CP ring, blocks merged by log-sum-exp; it must not hold a seq x seq matrix.

Layout (megatron-core's load-balanced split, as ``get_batch_on_this_cp_rank`` cuts a batch): the
sequence is cut into 2*cp chunks and CP rank r holds chunks r and 2*cp-1-r, so every rank has the
same causal work. Each (query tile, key chunk) block is computed with an explicit log-sum-exp and
merged; blocks of a later key chunk than the query chunk are skipped. The backward recomputes the
blocks (flash-attention's recurrence), so only the output and its log-sum-exp are kept per layer.

Without document ids, where the device has a fused kernel that returns the log-sum-exp (fused_attention_block),
each block is a whole chunk of queries against one key chunk: the diagonal block is square, as the kernel's
top-left causal mask needs. Document ids, and devices without such a kernel, take the matmul blocks.

Two exchanges of the keys and values (megatron-core's ``cp_comm_type`` names), the same blocks and merge:
- ``all_gather``: every rank's K/V gathered at once (cp times the local K/V held), dK/dV reduced to their owners.
- ``p2p``: cp ring steps; at step t a rank holds the K/V (and document ids) of rank (r - t) mod cp and posts their
  send to the next rank before computing its blocks against them, so the transfer hides behind that compute. The
  backward passes the K/V around again, and each source's dK/dV partial sum travels with them, back to its owner.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from megatron_sota.config.parallel import CP_COMM_TYPES
from megatron_sota.model.fused_attention_block import fused_block_kernel

# Query rows per block: bounds the [tile, chunk] score matrices that exist at any one time.
QUERY_TILE = 1024


def _slot(chunk: int, cp: int) -> int:
    """Where global chunk `chunk` sits in the gathered buffer (rank order, two chunks per rank)."""
    return 2 * chunk if chunk < cp else 2 * (2 * cp - 1 - chunk) + 1


def _owner(chunk: int, cp: int) -> int:
    """The CP rank that holds global chunk `chunk`."""
    return chunk if chunk < cp else 2 * cp - 1 - chunk


def _blocks(
    rank: int, cp: int, chunk: int, tile: int, source: Optional[int] = None
) -> Iterator[Tuple[slice, List[Tuple[slice, Optional[int]]]]]:
    """(local query rows, [(key columns, causal offset or None)]) for each query tile of this rank.

    Key columns index every rank's keys in rank order (source None, as gathered) or only rank `source`'s two chunks
    (a ring step): then a source before this rank gives both query chunks its first chunk, a source after it gives
    the second query chunk both of its chunks. A causal offset `a` means key column j of the block may be seen by
    tile row i iff j <= a + i; None means the whole key chunk precedes the query chunk.
    """
    first = 0 if source is None else 2 * source
    for local, q_chunk in enumerate((rank, 2 * cp - 1 - rank)):
        for start in range(0, chunk, tile):
            stop = min(start + tile, chunk)
            rows = slice(local * chunk + start, local * chunk + stop)
            keys = []
            for k_chunk in range(q_chunk + 1):  # later key chunks are fully masked: skipped
                if source is not None and _owner(k_chunk, cp) != source:
                    continue
                base = (_slot(k_chunk, cp) - first) * chunk
                if k_chunk < q_chunk:
                    keys.append((slice(base, base + chunk), None))
                else:  # the diagonal chunk: keys past the tile's last row are masked, so not computed
                    keys.append((slice(base, base + stop), start))
            yield rows, keys


def _allowed(rows: slice, cols: slice, offset: Optional[int], docs_q, docs_k, device) -> Optional[torch.Tensor]:
    """Bool [batch or 1, 1, 1, tile, keys] (True = attend), or None when every key is visible."""
    allowed = None
    if offset is not None:
        n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
        i = torch.arange(n_rows, device=device).unsqueeze(1)
        j = torch.arange(n_cols, device=device).unsqueeze(0)
        allowed = (j <= i + offset)[None, None, None]
    if docs_q is not None:
        same = (docs_q[:, rows].unsqueeze(2) == docs_k[:, cols].unsqueeze(1))[:, None, None]
        allowed = same if allowed is None else allowed & same
    return allowed


def _wide(*tensors):
    """Blocks are computed in fp32 at least (bf16 scores and sums lose the softmax's precision)."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def _as_taken(kernel, *tensors):
    """The inputs in the dtype the fused kernel takes: widened, or as they are (a GPU kernel's own fp32 accumulation)."""
    return _wide(*tensors) if kernel.widen else tensors


def _scores(q, k, allowed, scale):
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    return s if allowed is None else s.masked_fill(~allowed, float("-inf"))


def _finite(lse: torch.Tensor) -> torch.Tensor:
    # A row that sees no key of a block has lse -inf; exp(-inf - 0) = 0 keeps its probabilities 0, not NaN.
    return torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)


def _merge(out, lse, out_b, lse_b):
    """Combines two partial softmax results over disjoint key sets, each normalised by its own lse."""
    new = torch.logaddexp(lse, lse_b)
    ref = _finite(new)
    return out * torch.exp(lse - ref).unsqueeze(-1) + out_b * torch.exp(lse_b - ref).unsqueeze(-1), new


def _kernel(q, docs_q, fused):
    """The fused block kernel where it applies (no document ids, a kernel for q's device), else None: matmul blocks."""
    if not fused or docs_q is not None:
        return None
    return fused_block_kernel(q.device, q.dtype, q.size(1) * q.size(2), q.size(-1))


def _flat_heads(t: torch.Tensor) -> torch.Tensor:
    """[b, kv_heads, group, s, ...] -> [b, heads, s, ...]: query head h reads kv head h // group, as in the kernel."""
    return t.flatten(1, 2)


def _fused_forward(kernel, q, k, v, out, lse, rank, cp, scale, source):
    q, out, lse = (_flat_heads(t) for t in (q, out, lse))  # views: the merged blocks land in the caller's buffers
    s = q.size(2)
    # Every row's first blocks are those of its own rank's keys (all of them, or ring step 0): no merge with nothing.
    fresh = source is None or source == rank
    for rows, keys in _blocks(rank, cp, s // 2, s // 2, source):  # one tile per chunk: its diagonal block is square
        o, l = (None, None) if fresh else (out[..., rows, :], lse[..., rows])
        for cols, offset in keys:
            o_b, l_b = kernel.forward(q[..., rows, :], k[..., cols, :], v[..., cols, :], offset is not None, scale)
            o_b, l_b = o_b.to(out.dtype), l_b.to(out.dtype)
            o, l = (o_b, l_b) if o is None else _merge(o, l, o_b, l_b)
        out[..., rows, :], lse[..., rows] = o, l


def _fused_backward(kernel, d_out, q, k, v, out, lse, dq, dk, dv, rank, cp, scale, source):
    d_out, q, out, lse, dq = (_flat_heads(t) for t in (d_out, q, out, lse, dq))
    s = q.size(2)
    for rows, keys in _blocks(rank, cp, s // 2, s // 2, source):
        for cols, offset in keys:
            # The merged output and lse give each block its share of the gradient (delta = rowsum(dO * O) overall).
            dq_b, dk_b, dv_b = kernel.backward(
                d_out[..., rows, :], q[..., rows, :], k[..., cols, :], v[..., cols, :], out[..., rows, :],
                lse[..., rows], offset is not None, scale,
            )
            dq[..., rows, :] += dq_b
            dk[..., cols, :] += dk_b
            dv[..., cols, :] += dv_b


def empty_merge(q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (out, lse) that merging no block gives, in the merge's dtype (fp32 at least), for queries q."""
    wide = torch.promote_types(q.dtype, torch.float32)
    out = torch.zeros(q.shape, dtype=wide, device=q.device)
    return out, torch.full(q.shape[:-1], float("-inf"), dtype=wide, device=q.device)


def forward_blocks(
    out, lse, q, k, v, rank, cp, scale, docs_q=None, docs_k=None, tile=QUERY_TILE, fused=True, source=None
):
    """Merges into (out, lse) the blocks of this rank's queries against k, v (see attend_forward; `source`: _blocks)."""
    kernel = _kernel(q, docs_q, fused)
    if kernel is not None:
        return _fused_forward(kernel, *_as_taken(kernel, q, k, v), out, lse, rank, cp, scale, source)
    q, k, v = _wide(q, k.unsqueeze(2), v.unsqueeze(2))
    for rows, keys in _blocks(rank, cp, q.size(3) // 2, tile, source):
        o, l = out[..., rows, :], lse[..., rows]
        for cols, offset in keys:
            s = _scores(q[..., rows, :], k[..., cols, :], _allowed(rows, cols, offset, docs_q, docs_k, q.device), scale)
            l_b = torch.logsumexp(s, dim=-1)
            o_b = torch.matmul(torch.exp(s - _finite(l_b).unsqueeze(-1)), v[..., cols, :])
            o, l = _merge(o, l, o_b, l_b)
        out[..., rows, :], lse[..., rows] = o, l


def backward_blocks(
    grads, d_out, q, k, v, out, lse, rank, cp, scale, docs_q=None, docs_k=None, tile=QUERY_TILE, fused=True, source=None
):
    """Adds into grads = (dq like q, dk and dv like k, all fp32 at least) the gradients of forward_blocks' blocks."""
    dq, dk, dv = grads
    kernel = _kernel(q, docs_q, fused)
    if kernel is not None:
        taken = _as_taken(kernel, d_out, q, k, v)
        return _fused_backward(kernel, *taken, out, lse, dq, dk, dv, rank, cp, scale, source)
    q, k, v, d_out = _wide(q, k.unsqueeze(2), v.unsqueeze(2), d_out)
    dk, dv = dk.unsqueeze(2), dv.unsqueeze(2)
    delta = (d_out * out).sum(-1, keepdim=True)  # softmax backward's row term, rowsum(dO * O)
    for rows, keys in _blocks(rank, cp, q.size(3) // 2, tile, source):
        q_t, do_t = q[..., rows, :], d_out[..., rows, :]
        for cols, offset in keys:
            s = _scores(q_t, k[..., cols, :], _allowed(rows, cols, offset, docs_q, docs_k, q.device), scale)
            p = torch.exp(s - lse[..., rows].unsqueeze(-1))
            dv[..., cols, :] += torch.matmul(p.transpose(-1, -2), do_t).sum(2, keepdim=True)
            ds = p * (torch.matmul(do_t, v[..., cols, :].transpose(-1, -2)) - delta[..., rows, :])
            dq[..., rows, :] += torch.matmul(ds, k[..., cols, :]) * scale
            dk[..., cols, :] += torch.matmul(ds.transpose(-1, -2), q_t).sum(2, keepdim=True) * scale


def _zeros_wide(*like):
    """Zero gradient buffers shaped like each tensor, in fp32 at least (blocks' sums)."""
    return tuple(torch.zeros(t.shape, dtype=torch.promote_types(t.dtype, torch.float32), device=t.device) for t in like)


def attend_forward(q, k, v, rank, cp, scale, docs_q=None, docs_k=None, tile=QUERY_TILE, fused=True):
    """This rank's attention output and log-sum-exp, given every rank's keys and values.

    q: [b, kv_heads, group, 2*chunk, d] (this rank's two chunks); k, v: [b, kv_heads, 2*cp*chunk, d] in
    rank order (as all-gathered); docs_q [b, 2*chunk] / docs_k [b, 2*cp*chunk] optional document ids.
    Returns (in fp32 at least) out [b, kv_heads, group, 2*chunk, d] and lse [b, kv_heads, group, 2*chunk].
    `fused=False` takes the matmul blocks where a fused kernel would be used (to compare them).
    """
    out, lse = empty_merge(q)
    forward_blocks(out, lse, q, k, v, rank, cp, scale, docs_q, docs_k, tile, fused)
    return out, lse


def attend_backward(d_out, q, k, v, out, lse, rank, cp, scale, docs_q=None, docs_k=None, tile=QUERY_TILE, fused=True):
    """Gradients of attend_forward: dq for this rank's queries, dk and dv for every rank's keys (rank order)."""
    grads = _zeros_wide(q, k, k)
    backward_blocks(grads, d_out, q, k, v, out, lse, rank, cp, scale, docs_q, docs_k, tile, fused)
    return grads


def _gather(t: torch.Tensor, group, dim: int) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def _gather_keys(key, value, document_ids, group):
    """Every rank's keys and values [b, kv_heads, s_all, d] and document ids [b, s_all] (or None), in rank order."""
    k_all, v_all = (_gather(t, group, 0).permute(1, 2, 0, 3) for t in (key, value))
    return k_all, v_all, None if document_ids is None else _gather(document_ids, group, 1)


def _reduce_to_owner(full: torch.Tensor, group) -> torch.Tensor:
    """Sums every rank's gradient for all keys [s_all, ...] and keeps this rank's rows."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local = full.size(0) // world
    if dist.get_backend(group) == "nccl":
        mine = torch.empty((local,) + tuple(full.shape[1:]), dtype=full.dtype, device=full.device)
        dist.reduce_scatter_tensor(mine, full.contiguous(), group=group)
        return mine
    dist.all_reduce(full, group=group)  # gloo has no reduce-scatter
    return full[rank * local:(rank + 1) * local]


def _heads_first(t: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[s, b, heads, d] -> [b, kv_heads, group, s, d] (query head h reads kv head h // group, as enable_gqa)."""
    s, b, h, d = t.shape
    return t.reshape(s, b, kv_heads, h // kv_heads, d).permute(1, 2, 3, 0, 4)


def _seq_first(t: torch.Tensor) -> torch.Tensor:
    """[b, kv_heads, group, s, d] -> [s, b, heads, d]."""
    b, kv, g, s, d = t.shape
    return t.permute(3, 0, 1, 2, 4).reshape(s, b, kv * g, d)


def _ring_shift(tensors, group, tag: int):
    """Posts the send of `tensors` to the next CP rank and the receive of the previous rank's; returns a wait.

    The wait (a callable) blocks until both are done and returns the received tensors. Each tensor has its own
    tag (from `tag`) so that transfers in flight at once between the same two ranks (cp=2) cannot be mixed up.
    """
    rank, cp = dist.get_rank(group), dist.get_world_size(group)
    after, before = (dist.get_global_rank(group, (rank + step) % cp) for step in (1, -1))
    received = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t, after, group, tag + i) for i, t in enumerate(tensors)]
    ops += [dist.P2POp(dist.irecv, t, before, group, tag + i) for i, t in enumerate(received)]
    works = dist.batch_isend_irecv(ops)

    def wait():
        for work in works:
            work.wait()
        return received

    return wait


_KV_TAG, _GRAD_TAG = 0, 8  # the K/V (and ids) ring and the dK/dV ring, in flight together in the backward


def _ring(key, value, document_ids, group):
    """(source rank, its keys [b, kv_heads, 2*chunk, d], values, document ids or None) for each of the cp ring steps.

    The send of the held K/V onward is posted before the step is handed out, so it overlaps that step's compute.
    """
    rank, cp = dist.get_rank(group), dist.get_world_size(group)
    held = [t.contiguous() for t in (key, value, document_ids) if t is not None]
    for step in range(cp):
        wait = _ring_shift(held, group, _KV_TAG) if step < cp - 1 else None
        k, v = (t.permute(1, 2, 0, 3) for t in held[:2])
        yield (rank - step) % cp, k, v, held[2] if len(held) > 2 else None
        if wait is not None:
            held = wait()


def ring_forward(q, key, value, document_ids, group, scale):
    """attend_forward with the K/V passed around the CP ring (key/value [s_local, b, kv_heads, d] of this rank)."""
    rank, cp = dist.get_rank(group), dist.get_world_size(group)
    out, lse = empty_merge(q)
    for source, k, v, docs_k in _ring(key, value, document_ids, group):
        forward_blocks(out, lse, q, k, v, rank, cp, scale, document_ids, docs_k, source=source)
    return out, lse


def ring_backward(d_out, q, key, value, out, lse, document_ids, group, scale):
    """dq, and dk, dv [b, kv_heads, s_local, d] of this rank's own keys: each source's partial sums go round with it.

    At step t this rank adds its share for source (r - t) mod cp to the sum the previous rank passed on, and sends
    it on; after cp steps the sum of every rank's share arrives at its owner.
    """
    rank, cp = dist.get_rank(group), dist.get_world_size(group)
    (dq,) = _zeros_wide(q)
    passed_on = None  # the wait for the partial sums of the previous step's source, sent on by the previous rank
    for source, k, v, docs_k in _ring(key, value, document_ids, group):
        dk, dv = _zeros_wide(k, v)
        backward_blocks((dq, dk, dv), d_out, q, k, v, out, lse, rank, cp, scale, document_ids, docs_k, source=source)
        if passed_on is not None:  # it travelled while this step computed
            earlier_dk, earlier_dv = passed_on()
            dk, dv = dk + earlier_dk, dv + earlier_dv
        passed_on = _ring_shift([dk, dv], group, _GRAD_TAG)
    dk, dv = passed_on()
    return dq, dk, dv


def _seq_local(t: torch.Tensor) -> torch.Tensor:
    """[b, kv_heads, s, d] -> [s, b, kv_heads, d]."""
    return t.permute(2, 0, 1, 3)


class _ContextParallelAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, document_ids, group, scale, comm_type):
        rank, cp = dist.get_rank(group), dist.get_world_size(group)
        q = _heads_first(query, key.size(2))
        if comm_type == "p2p":
            out, lse = ring_forward(q, key, value, document_ids, group, scale)
        else:
            k_all, v_all, docs_k = _gather_keys(key, value, document_ids, group)
            out, lse = attend_forward(q, k_all, v_all, rank, cp, scale, document_ids, docs_k)
        # Only this rank's keys are kept; the backward exchanges them again rather than hold cp times as many.
        ctx.save_for_backward(query, key, value, document_ids, out, lse)
        ctx.group, ctx.scale, ctx.comm_type = group, scale, comm_type
        return _seq_first(out).to(query.dtype)

    @staticmethod
    def backward(ctx, d_out):
        query, key, value, document_ids, out, lse = ctx.saved_tensors
        group, kv_heads = ctx.group, key.size(2)
        rank, cp = dist.get_rank(group), dist.get_world_size(group)
        d_out, q = _heads_first(d_out, kv_heads), _heads_first(query, kv_heads)
        if ctx.comm_type == "p2p":
            dq, dk, dv = ring_backward(d_out, q, key, value, out, lse, document_ids, group, ctx.scale)
            dk, dv = _seq_local(dk), _seq_local(dv)
        else:
            k_all, v_all, docs_k = _gather_keys(key, value, document_ids, group)
            dq, dk, dv = attend_backward(d_out, q, k_all, v_all, out, lse, rank, cp, ctx.scale, document_ids, docs_k)
            dk, dv = (_reduce_to_owner(_seq_local(t).contiguous(), group) for t in (dk, dv))
        return _seq_first(dq).to(query.dtype), dk.to(key.dtype), dv.to(value.dtype), None, None, None, None


def context_parallel_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    group,
    scale: float,
    document_ids: Optional[torch.Tensor] = None,
    comm_type: str = "all_gather",
) -> torch.Tensor:
    """Causal attention of this CP rank's queries over the whole sequence's keys.

    query [s_local, b, heads, d], key/value [s_local, b, kv_heads, d] hold this rank's two chunks
    (megatron-core's load-balanced split); `document_ids` [b, s_local] (integer, same split) further
    restricts each query to keys of its own document. `comm_type` (CP_COMM_TYPES) is how K/V are exchanged.
    Returns [s_local, b, heads, d].
    """
    if comm_type not in CP_COMM_TYPES:
        raise ValueError(f"CP attention: comm_type must be one of {', '.join(CP_COMM_TYPES)}, got {comm_type!r}")
    return _ContextParallelAttention.apply(query, key, value, document_ids, group, scale, comm_type)
