"""The reward model as a trainer objective: preference pairs -> RewardGPTModel scores -> Bradley-Terry loss per pair.

It wires the data (pair_data.py), the model (reward_head.py) and the loss (reward_loss.py) into the trainer;
it must not compute scores or losses itself.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Optional

import torch

from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.conversion.export import reward_pad_problem
from megatron_sota.conversion.tokenizer_export import special_token_ids
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.pair_data import PairDataset, encode_pair_files, pair_rows
from megatron_sota.posttrain.reward_head import keys_missing_from_pretrained, reward_model_class
from megatron_sota.posttrain.reward_loss import last_real_token_scores, pair_losses, reward_metric_sums
from megatron_sota.posttrain.steps import derive_steps
from megatron_sota.training.objective import Objective
from megatron_sota.training.step import MAIN_METRIC, local_batch

logger = logging.getLogger(__name__)


def _pair_loss(real_mask, pair_index, margin, centering: float, scores: torch.Tensor):
    """Loss function of one micro-batch: `scores` [2n, s, 1] of pair_rows' rows (chosen block, rejected block).
    Empty samples (pair_index -1, validation's top-up) count for nothing."""
    keep = pair_index >= 0
    rows = torch.cat([keep, keep])
    chosen, rejected = last_real_token_scores(scores[rows], real_mask[rows]).chunk(2)
    losses = pair_losses(chosen, rejected, margin[keep], centering)
    pairs = keep.sum()
    loss_sum = losses.sum()
    report = {MAIN_METRIC: torch.stack([loss_sum.detach(), pairs.to(loss_sum.dtype)])}
    for name, (total, count) in reward_metric_sums(chosen, rejected).items():
        report[name] = torch.stack([total, count])
    return loss_sum, pairs.to(torch.int), report


def _reward_forward(device: torch.device, centering: float, data_iterator, model):
    batch = pair_rows(next(data_iterator))
    local = local_batch(batch, device, extra_keys=("real_mask",))
    # labels=None: the reward head's [2n, s, 1] scores instead of a vocabulary loss; causal attention over each row.
    output = model(local["tokens"], local["position_ids"], None, labels=None)
    pair_index, margin = batch["pair_index"].to(device), batch["margin"].to(device)
    return output, partial(_pair_loss, local["real_mask"], pair_index, margin, centering)


def _check_in_loop_export(job, tokenizer) -> None:
    """checkpoint.export_hf_every exports the reward model with the tokenizer's pad id (special_token_ids): refused
    before anything is built where it has none other than eos, rather than failing after the run."""
    every = job.checkpoint.export_hf_every
    problem = reward_pad_problem(special_token_ids(tokenizer), tokenizer.vocab_size) if every > 0 else None
    if problem:
        raise MegatronSotaError(
            f"checkpoint.export_hf_every={every} with posttrain=rm: {problem} in tokenizer.type={job.tokenizer.type}; "
            "use a tokenizer with a pad token, or set checkpoint.export_hf_every=0 and export after training with "
            "tools/convert_checkpoint.py export --pad-token-id <id>"
        )


class RewardObjective(Objective):
    """Bradley-Terry reward model; the loss is averaged over pairs, metrics under TRL's RewardTrainer names.

    TRL's min_reward / max_reward are not reported: the trainer reduces metrics as sums over counts only.
    """

    name = "rm"
    metric_names = ("accuracy", "margin", "mean_reward")
    rows_per_sample = 2
    token_loss = False  # a loss per preference pair

    def __init__(self, cfg: PosttrainConfig):
        self.cfg = cfg
        self.train_pairs: list = []
        self.valid_pairs: Optional[list] = None

    def _pairs(self, files, key: str, tokenizer, seq_length: int) -> Optional[list]:
        if not files:
            return None
        pairs = encode_pair_files(files, self.cfg.chat_template, tokenizer, seq_length)
        logger.info(f"{key}: {len(pairs)} preference pairs, each sequence padded to {seq_length} tokens")
        return pairs

    def prepare(self, job, inputs):
        _check_in_loop_export(job, inputs.tokenizer)
        seq = job.train.seq_length
        self.train_pairs = self._pairs(self.cfg.train_files, "posttrain.train_files", inputs.tokenizer, seq)
        self.valid_pairs = self._pairs(self.cfg.valid_files, "posttrain.valid_files", inputs.tokenizer, seq)
        return derive_steps(job, len(self.train_pairs), len(self.valid_pairs) if self.valid_pairs else 0)

    def model_class(self, job):
        return reward_model_class(head_seed=job.train.seed)

    def fresh_keys(self, keys):
        return keys_missing_from_pretrained(keys)

    def datasets(self, job, inputs, counts, run_dir):
        seq, pad = job.train.seq_length, inputs.tokenizer.pad
        train = PairDataset(self.train_pairs, counts.train, seq, pad, seed=job.train.seed)
        valid = PairDataset(self.valid_pairs, counts.valid, seq, pad, seed=None) if self.valid_pairs else None
        return train, valid

    def forward_step(self, state):
        return partial(_reward_forward, state.session.device, self.cfg.center_rewards_coefficient)
