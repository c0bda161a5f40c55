"""The small CPU job of the post-training learning tests: a tiny untrained model on the repository's right-vs-wrong
preferences (posttrain/example_data.py, six instruction tasks, held-out questions), for DPO and the reward model.

It only builds the job (and writes its tokenizer and data under a test's directory); it must not train or assert.
"""

from __future__ import annotations

import pathlib

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.posttrain.example_data import write_example_data
from tests.chat_tokenizer import train_chat_tokenizer

STEPS = 30
"""One epoch of the 480 training pairs (80 of each task) at 16 pairs per step."""


def preference_learning_job(tmp_path: pathlib.Path, objective: str) -> JobConfig:
    """posttrain=`objective` for one epoch of 100 questions per task (20 held out), validated at the end only:
    2 layers of width 64, sequences of 128 tokens, 16 pairs per step, lr 1e-3 after 3 warm-up steps."""
    tokenizer = train_chat_tokenizer(tmp_path / "tokenizer")
    data = write_example_data(str(tmp_path / "data"), sft_examples=4, sft_valid=1, preferences_per_task=100)
    job = JobConfig()
    job.posttrain = PosttrainConfig(
        objective=objective, train_files=[data.preference_train], valid_files=[data.preference_valid], epochs=1
    )
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", str(tokenizer)
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = 2, 64, 128
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 128, 8, 16
    job.train.iters, job.train.eval_interval = 0, 1000  # iters from the epoch; eval_interval > STEPS: at the end
    job.optimizer.lr, job.scheduler.warmup_iters = 1e-3, 3
    job.logging.tensorboard, job.checkpoint.save_at_end = False, False
    return job
