"""Direct preference optimisation as a trainer objective: preference files -> pair samples -> DPO's sigmoid loss
against reference log-probs computed once, before the first step, from the weights training starts from.

It must not decide a pair's loss (posttrain/dpo_loss.py) nor lay samples out (posttrain/pair_data.py).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import List, Optional

import torch

from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.dpo_loss import METRICS, DPOSettings, dpo_loss_func
from megatron_sota.posttrain.pair_data import PairDataset, encode_pair_files, pair_rows, pair_sample
from megatron_sota.posttrain.reference_logps import REFERENCE_FILE, reference_logps_for_run
from megatron_sota.posttrain.steps import derive_steps
from megatron_sota.training.objective import Objective
from megatron_sota.training.step import MAIN_METRIC, local_batch

logger = logging.getLogger(__name__)


class _Shifted(torch.utils.data.Dataset):
    """A pair dataset whose real pairs' pair_index is moved by `offset`: the validation pairs' rows of the one
    reference table follow the training pairs'."""

    def __init__(self, dataset, offset: int):
        self.dataset, self.offset = dataset, offset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        if int(sample["pair_index"]) >= 0:
            sample["pair_index"] = sample["pair_index"] + self.offset
        return sample


def _reference_sample(pair, index: int, seq_length: int, pad_id: int) -> dict:
    """What the reference pass reads of a pair: its rows cut to the longer of its two sequences."""
    sample = pair_sample(pair, index, seq_length, pad_id)
    width = max(len(pair.chosen.ids), len(pair.rejected.ids))
    return {"pair_index": index, **{key: sample[key][:, :width] for key in ("tokens", "labels", "loss_mask")}}


def _real_pairs_loss(keep: torch.Tensor, loss_func, logits: torch.Tensor):
    """dpo_loss_func on the rows of real pairs (an empty sample tops up the last validation batch), with its
    "loss" reported as the trainer's MAIN_METRIC."""
    loss_sum, pairs, report = loss_func(logits if bool(keep.all()) else logits[keep])
    report[MAIN_METRIC] = report.pop("loss")
    return loss_sum, pairs, report


class DPOObjective(Objective):
    name = "dpo"
    rows_per_sample = 2
    token_loss = False  # a loss per preference pair
    metric_names = tuple(name for name in METRICS if name != "loss")

    def __init__(self, cfg: PosttrainConfig):
        self.cfg = cfg
        self.settings = DPOSettings(cfg.beta, cfg.label_smoothing, cfg.sft_weight)
        self.train_pairs: List = []
        self.valid_pairs: List = []
        self.run_dir: Optional[str] = None
        self.reference: Optional[torch.Tensor] = None
        """[training pairs + validation pairs, 2]: the reference model's log-probs of (chosen, rejected)."""

    def _pairs(self, files, key: str, tokenizer, seq_length: int) -> list:
        if not files:
            return []
        pairs = encode_pair_files(files, self.cfg.chat_template, tokenizer, seq_length)
        logger.info(f"{key}: {len(pairs)} preference pairs")
        return pairs

    def prepare(self, job, inputs):
        seq = job.train.seq_length
        self.train_pairs = self._pairs(self.cfg.train_files, "posttrain.train_files", inputs.tokenizer, seq)
        self.valid_pairs = self._pairs(self.cfg.valid_files, "posttrain.valid_files", inputs.tokenizer, seq)
        return derive_steps(job, len(self.train_pairs), len(self.valid_pairs))

    def datasets(self, job, inputs, counts, run_dir):
        self.run_dir = run_dir
        pad, seq = inputs.tokenizer.eod, job.train.seq_length
        train = PairDataset(self.train_pairs, counts.train, seq, pad, seed=job.train.seed)
        if not self.valid_pairs:
            return train, None
        return train, _Shifted(PairDataset(self.valid_pairs, counts.valid, seq, pad, seed=None), len(self.train_pairs))

    def before_first_step(self, state, progress):
        """The reference table: computed from the weights just loaded (checkpoint.init_from, else the seeded
        initialisation), or, on a resume, read back from the run directory (the weights are no longer those)."""
        job = state.job
        path = os.path.join(self.run_dir, REFERENCE_FILE)
        if progress.iteration > 0 and not os.path.exists(path):
            raise MegatronSotaError(
                f"{path}: a DPO run resumed at step {progress.iteration} needs the reference log-probs its first "
                "step stored there, found no file (the resumed weights are no longer the reference): resume in "
                "the run directory that started it, or start a new run"
            )
        if job.checkpoint.init_from:
            source = f"checkpoint.init_from={resolve_checkpoint_dir(job.checkpoint.init_from, 'checkpoint.init_from')}"
        else:
            source = f"initialised with train.seed={job.train.seed}: {job.model}"
        pad, seq = state.inputs.tokenizer.eod, job.train.seq_length
        pairs = self.train_pairs + self.valid_pairs
        samples = [_reference_sample(pair, k, seq, pad) for k, pair in enumerate(pairs)]
        self.reference = reference_logps_for_run(
            self.run_dir, state.models, samples, len(pairs), state.inputs.tokenizer.vocab_size,
            job.train.micro_batch_size, state.session.device, key_extra=source,
        )

    def forward_step(self, state):
        return partial(self._forward_step, state.session.device, state.inputs.tokenizer.vocab_size)

    def _forward_step(self, device: torch.device, vocab_size: int, data_iterator, model):
        """n pair samples [n, 2, s] -> pair_rows' 2n rows (the n chosen, then the n rejected: split_pairs' halves);
        the model is called without labels so that the loss sees the log-probs of the tokenizer's ids."""
        batch = pair_rows(next(data_iterator))
        rows = local_batch(batch, device)
        index = batch["pair_index"].to(device)
        real = index >= 0
        keep = torch.cat([real, real])
        reference = self.reference[index.clamp(min=0)][real]
        output = model(rows["tokens"], rows["position_ids"], None)
        loss_func = partial(
            dpo_loss_func, rows["labels"][keep], rows["loss_mask"][keep], reference, vocab_size, self.settings
        )
        return output, partial(_real_pairs_loss, keep, loss_func)
