"""Turns the `data` config into megatron-core train/valid/test datasets and per-rank loaders.

Datasets come from megatron-core's builder (cached, seeded indices); this module only
configures them and decides which samples each data-parallel rank reads.
"""

from __future__ import annotations

import atexit
import signal
import weakref
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset

from megatron_sota.config.run import DataConfig
from megatron_sota.data.mix import ResolvedBlend
from megatron_sota.data.tokenizer_interface import DatasetTokenizer
from megatron_sota.runtime.upstream import LOADER_WORKERS_AT_EXIT, applies


@dataclass(frozen=True)
class SampleCounts:
    train: int
    valid: int
    test: int


def sample_counts(
    iters: int, global_batch_size: int, eval_iters: int, start_iteration: int = 0, start_consumed: int = 0
) -> SampleCounts:
    """How many sequences each split must provide for a run of `iters` steps, resumed after `start_iteration`
    steps that consumed `start_consumed` samples (with the same batch size, the same as a run from step 0)."""
    # Every validation reads the same first eval_iters batches, so they are comparable over time.
    return SampleCounts(
        train=start_consumed + max(iters - start_iteration, 0) * global_batch_size,
        valid=eval_iters * global_batch_size,
        test=eval_iters * global_batch_size,
    )


def build_datasets(
    data: DataConfig,
    tokenizer: DatasetTokenizer,
    seq_length: int,
    seed: int,
    counts: SampleCounts,
    cache_dir: str,
    blend: Optional[ResolvedBlend] = None,
):
    """Returns (train, valid, test) megatron-core datasets; valid/test may be None for empty splits.

    `blend` (from mix.resolve_blend) is required unless data.mock; its entries keep their order in
    the BlendedDataset's `datasets`, which is how data_mix_report maps samples back to sources.
    """
    mcore_blend = None if data.mock else (blend.prefixes, list(blend.megatron_weights))
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=mcore_blend,
        split=",".join(str(x) for x in data.split),
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        # SDPA applies the causal mask itself, and the documents of reset_attention_mask reach it as ids
        # computed from the tokens (training/step.py); no [s, s] mask tensor per sample.
        create_attention_mask=False,
        mid_level_dataset_surplus=0.005,
    )
    dataset_cls = MockGPTDataset if data.mock else GPTDataset
    builder = BlendedMegatronDatasetBuilder(
        dataset_cls, [counts.train, counts.valid, counts.test], lambda: True, config
    )
    return builder.build()


class GlobalBatchSampler:
    """Yields this data-parallel rank's micro-batches of sample indices, in global order.

    Global batch j holds samples [j*gbs, (j+1)*gbs); each stretch of micro_batch_size*dp of
    them is split into dp contiguous micro-batches. The same global batch is therefore read
    whatever the data-parallel size, and resuming only needs the consumed-sample count.
    """

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int):
        self.total = total_samples
        self.consumed = consumed_samples
        self.mbs = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __len__(self) -> int:
        return (self.total - self.consumed) // (self.mbs * self.dp_size)

    def __iter__(self) -> Iterator[List[int]]:
        stride = self.mbs * self.dp_size
        start = self.consumed
        while start + stride <= self.total:
            first = start + self.dp_rank * self.mbs
            yield list(range(first, first + self.mbs))
            start += stride


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM sends SIGUSR1/SIGTERM to every process of a job. The trainer (the main process) turns
    them into a save and a clean stop; a loader worker dying of them instead would fail the main
    process mid-save ("DataLoader worker is killed by signal"). Workers end with the main process."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_loader(
    dataset, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int, num_workers: int
) -> Iterator[dict]:
    """An endless-until-exhausted iterator of micro-batch dicts (tokens, labels, loss_mask, position_ids)."""
    if num_workers > 0:
        applies(LOADER_WORKERS_AT_EXIT)  # refuses before any worker starts if torch lost the call
    sampler = GlobalBatchSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank, dp_size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
    )
    iterator = iter(loader)
    if num_workers > 0:
        _stop_workers_at_exit(iterator)
    return iterator


def _stop_workers_at_exit(iterator) -> None:
    """Workers ignore SIGTERM, so multiprocessing's exit hook (terminate, then join) would wait
    for them forever if the iterator is still alive at exit, as it is when a crash's traceback
    holds it. This hook, registered after multiprocessing's, runs before it and stops them
    through the iterator's private _shutdown_workers (runtime/upstream.py LOADER_WORKERS_AT_EXIT)."""

    def stop() -> None:
        alive = ref()
        if alive is not None:
            alive._shutdown_workers()

    ref = weakref.ref(iterator, lambda _: atexit.unregister(stop))
    atexit.register(stop)
