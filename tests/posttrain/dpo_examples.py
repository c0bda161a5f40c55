"""The small CPU DPO job, on tests/posttrain/pair_examples.py's pairs built straight from token ids.

Stands in for the records and chat-template layer so that the DPO objective and the trainer can be tested on
their own; it must not template or tokenize anything.
"""

from __future__ import annotations

from tests.posttrain.examples import replace_reader, sft_job
from tests.posttrain.pair_examples import fake_encode_pair_files


def use_fake_pairs(monkeypatch=None) -> None:
    """In this process, DPO reads pair_examples' pairs, 24 training / 6 validation (multi-rank probes call it). See replace_reader."""
    replace_reader("megatron_sota.posttrain.dpo", "encode_pair_files", fake_encode_pair_files, monkeypatch)


def dpo_job(**posttrain):
    """sft_job's tiny model as a DPO run: 3 steps of 4 pairs, 2 pairs per micro-batch."""
    job = sft_job(objective="dpo", **posttrain)
    job.train.global_batch_size, job.train.iters = 4, 3
    return job
