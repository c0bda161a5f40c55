"""DPO's reference log-probs: computed once through the pipeline schedule before training, stored in the run directory.

A resumed run loads them instead of recomputing; a file computed from other pairs is refused. It must not train.

A pair sample is a mapping with `pair_index` (int, 0 <= index < number of pairs), and `tokens`,
`labels`, `loss_mask`: [2, s] tensors, row 0 the chosen completion and row 1 the rejected one,
laid out as in dpo_loss (labels[i] = tokens[i + 1], loss_mask[i] = 1 on completion tokens).
"""

from __future__ import annotations

import hashlib
import io
import os
from functools import partial
from typing import Iterable, Iterator, List, Mapping, Sequence

import torch
from megatron.core import parallel_state

from megatron_sota.atomic_files import write_bytes
from megatron_sota.errors import MegatronSotaError
from megatron_sota.parallelize.pipeline import run_schedule
from megatron_sota.posttrain.pair_data import pair_rows
from megatron_sota.posttrain.token_logps import sequence_logps, token_logps

REFERENCE_FILE = "reference_logps.pt"
"""Its name in the run directory."""
_FORMAT = 1
_ROW_KEYS = ("tokens", "labels", "loss_mask")


def samples_key(samples: Iterable[Mapping], extra: str = "") -> str:
    """sha256 of the pairs (their indices, tokens, labels and loss masks, in pair_index order) and of `extra`
    (for example the reference checkpoint's path), naming what a stored file was computed from."""
    digest = hashlib.sha256(f"dpo-reference-v{_FORMAT}\n{extra}\n".encode())
    for sample in sorted(samples, key=lambda s: int(s["pair_index"])):
        digest.update(f"{int(sample['pair_index'])}:{tuple(sample['tokens'].shape)}\n".encode())
        for key in _ROW_KEYS:
            digest.update(torch.as_tensor(sample[key]).to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_samples(samples: Sequence[Mapping], num_pairs: int) -> None:
    seen = set()
    for sample in samples:
        index = int(sample["pair_index"])
        if not 0 <= index < num_pairs or index in seen:
            raise ValueError(f"pair_index {index}: expected each of 0..{num_pairs - 1} once")
        seen.add(index)
        shape = sample["tokens"].shape
        if len(shape) != 2 or shape[0] != 2 or any(sample[key].shape != shape for key in _ROW_KEYS):
            raise ValueError(f"pair {index}: tokens, labels and loss_mask must share one [2, s] shape, found "
                             + ", ".join(f"{key} {tuple(sample[key].shape)}" for key in _ROW_KEYS))
    if len(seen) != num_pairs:
        raise ValueError(f"{len(seen)} pairs given; expected all {num_pairs}")


def _logps_loss(labels: torch.Tensor, loss_mask: torch.Tensor, vocab_size: int, logits: torch.Tensor):
    """Loss function of the last stage: no loss, each row's completion log-prob reported."""
    logps = sequence_logps(token_logps(logits, labels, vocab_size), loss_mask)
    return torch.zeros((), device=logits.device), {"logps": logps.detach()}


def _forward_step(device: torch.device, vocab_size: int, data_iterator: Iterator[dict], model):
    batch = next(data_iterator)
    tokens = batch["tokens"].to(device)
    positions = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
    output = model(tokens, positions, None)
    return output, partial(_logps_loss, batch["labels"].to(device), batch["loss_mask"].to(device), vocab_size)


def _micro_batches(pairs: List[Mapping], pairs_per_micro_batch: int, count: int, length: int) -> List[dict]:
    """`count` micro-batches of pairs_per_micro_batch pairs in pair_rows' order (the chosen rows, then the rejected),
    right-padded to `length`; pairs past `pairs` are empty rows."""
    samples = {key: torch.zeros(count * pairs_per_micro_batch, 2, length, dtype=torch.long) for key in _ROW_KEYS}
    for k, pair in enumerate(pairs):
        width = pair["tokens"].shape[1]
        for key in _ROW_KEYS:
            samples[key][k, :, :width] = torch.as_tensor(pair[key]).to(torch.long)
    step = pairs_per_micro_batch
    starts = range(0, count * step, step)
    return [pair_rows({key: value[i : i + step] for key, value in samples.items()}) for i in starts]


def _pair_table(rows: torch.Tensor, pairs_per_micro_batch: int) -> torch.Tensor:
    """The schedule's per-row log-probs of _micro_batches' rows, micro-batch after micro-batch -> [pairs, 2]
    (chosen, rejected) in the pairs' order."""
    return rows.view(-1, 2, pairs_per_micro_batch).transpose(1, 2).reshape(-1, 2)


@torch.no_grad()
def compute_reference_logps(
    models: Sequence[torch.nn.Module], samples: Iterable[Mapping], num_pairs: int, vocab_size: int,
    pairs_per_micro_batch: int, device: torch.device,
) -> torch.Tensor:
    """[num_pairs, 2] float64 log-probs (chosen, rejected) of each pair's completions under `models`, the same on every rank.

    `models`: this rank's model chunks at any TP/PP (virtual stages included); every rank passes the
    same samples. Each data-parallel replica scores its share of the pairs (pairs i with
    i % dp == dp rank, in the order given); an all-reduce over the data-parallel group completes the table.
    """
    if parallel_state.get_context_parallel_world_size() > 1:
        raise NotImplementedError("DPO needs each row's whole completion on one rank: context_parallel_size must be 1")
    samples = list(samples)
    _check_samples(samples, num_pairs)
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    # Sequence parallelism splits rows over TP ranks; FP8 GEMMs want multiples of 16 rows per rank.
    multiple = 16 * parallel_state.get_tensor_model_parallel_world_size()
    table = torch.zeros(num_pairs, 2, dtype=torch.float64, device=device)
    share = samples[dp_rank::dp]
    per_call = pairs_per_micro_batch * pp  # the interleaved schedule wants a multiple of pp micro-batches
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        for begin in range(0, len(share), per_call):
            pairs = share[begin : begin + per_call]
            length = -(-max(p["tokens"].shape[1] for p in pairs) // multiple) * multiple
            batches = _micro_batches(pairs, pairs_per_micro_batch, pp, length)
            rows = run_schedule(
                models, partial(_forward_step, device, vocab_size), [iter(batches) for _ in models], len(batches),
                2 * pairs_per_micro_batch, length, forward_only=True,
                collect=lambda reports: torch.cat([r["logps"] for r in reports]), result_shape=(2 * per_call,),
                device=device,
            )
            indices = torch.tensor([int(p["pair_index"]) for p in pairs], device=device)
            table[indices] = _pair_table(rows, pairs_per_micro_batch)[: len(pairs)]
    finally:
        for model, training in zip(models, was_training):
            model.train(training)
    if dp > 1:
        torch.distributed.all_reduce(table, group=parallel_state.get_data_parallel_group())
    return table


def save_reference_logps(path: str, logps: torch.Tensor, key: str) -> None:
    """Writes the table and the key of the pairs it was computed from, atomically."""
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, "samples_sha256": key, "logps": logps.detach().cpu().to(torch.float64)}, buffer)
    write_bytes(path, buffer.getvalue())


def load_reference_logps(path: str, key: str, num_pairs: int) -> torch.Tensor:
    """The stored [num_pairs, 2] table; refuses a file computed from other pairs or not written by save_reference_logps."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise MegatronSotaError(f"{path}: not a reference log-prob file written by this project ({err})") from None
    if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
        raise MegatronSotaError(f"{path}: expected a reference log-prob file of format {_FORMAT}, found {type(stored).__name__}")
    if stored.get("samples_sha256") != key:
        raise MegatronSotaError(
            f"{path}: computed from other pairs (samples_sha256 {stored.get('samples_sha256')}, expected {key}); "
            "the training pairs or the reference model changed since: delete the file to recompute it"
        )
    logps = stored["logps"]
    if tuple(logps.shape) != (num_pairs, 2):
        raise MegatronSotaError(f"{path}: a table of shape {tuple(logps.shape)}, expected ({num_pairs}, 2)")
    return logps


def reference_logps_for_run(
    run_dir: str, models: Sequence[torch.nn.Module], samples: Iterable[Mapping], num_pairs: int, vocab_size: int,
    pairs_per_micro_batch: int, device: torch.device, key_extra: str = "",
) -> torch.Tensor:
    """Loads run_dir/REFERENCE_FILE when it exists (a resumed run), else computes it and global rank 0 stores it.

    Call on every rank, before the first training step (the models must still be the reference).
    Rank 0 decides whether the file exists, so that every rank takes the same branch.
    """
    samples = list(samples)
    key = samples_key(samples, key_extra)
    path = os.path.join(run_dir, REFERENCE_FILE)
    exists = torch.tensor([int(os.path.exists(path))], dtype=torch.int, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(exists, src=0)
    if exists.item():
        return load_reference_logps(path, key, num_pairs).to(device)
    table = compute_reference_logps(models, samples, num_pairs, vocab_size, pairs_per_micro_batch, device)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        save_reference_logps(path, table, key)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return table
