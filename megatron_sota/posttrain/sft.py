"""Supervised fine-tuning as a trainer objective: chat records -> packed rows -> next-token loss on the trained tokens.

The loss is pretraining's masked sum over the exported model's log-probs (posttrain/sft_loss.py); this
module brings the data and that forward step. It must not change how a token's loss is computed.
"""

from __future__ import annotations

import logging
from typing import Optional

from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.posttrain.sft_data import Rows, SFTDataset, encode_files, lay_out
from megatron_sota.posttrain.sft_loss import sft_forward_step
from megatron_sota.posttrain.steps import derive_steps
from megatron_sota.training.objective import Objective

logger = logging.getLogger(__name__)


class SFTObjective(Objective):
    name = "sft"

    def __init__(self, cfg: PosttrainConfig):
        self.cfg = cfg
        self.train_rows: Optional[Rows] = None
        self.valid_rows: Optional[Rows] = None

    def _rows(self, files, key: str, tokenizer, seq_length: int) -> Optional[Rows]:
        if not files:
            return None
        examples = encode_files(files, self.cfg.chat_template, self.cfg.assistant_only_loss, tokenizer, seq_length)
        rows = lay_out(examples, seq_length, self.cfg.packing, key)
        logger.info(
            f"{key}: {len(examples)} conversations {'packed' if self.cfg.packing else 'one per row'} into "
            f"{len(rows.rows)} rows of {seq_length} tokens; packing efficiency {rows.efficiency:.1%} "
            "(real tokens / row tokens)"
        )
        return rows

    def prepare(self, job, inputs):
        seq = job.train.seq_length
        self.train_rows = self._rows(self.cfg.train_files, "posttrain.train_files", inputs.tokenizer, seq)
        self.valid_rows = self._rows(self.cfg.valid_files, "posttrain.valid_files", inputs.tokenizer, seq)
        return derive_steps(job, len(self.train_rows.rows), len(self.valid_rows.rows) if self.valid_rows else 0)

    def datasets(self, job, inputs, counts, run_dir):
        pad, packed = inputs.tokenizer.eod, self.cfg.packing
        train = SFTDataset(self.train_rows, counts.train, pad, packed, seed=job.train.seed)
        valid = SFTDataset(self.valid_rows, counts.valid, pad, packed, seed=None) if self.valid_rows else None
        return train, valid

    def forward_step(self, state):
        return sft_forward_step(state.session.device, state.inputs.tokenizer.vocab_size, state.document_eod)
