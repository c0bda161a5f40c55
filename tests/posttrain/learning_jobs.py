"""The small CPU jobs of the post-training learning tests: a tiny untrained model on the repository's data
(posttrain/example_data.py: six instruction tasks, held-out questions), its conversations for SFT and its
right-vs-wrong preferences for DPO and the reward model.

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


def learning_job(tmp_path: pathlib.Path, objective: str) -> JobConfig:
    """posttrain=`objective` for one epoch, validated at the end only: 2 layers of width 64, sequences of 128
    tokens (SFT: rows of 384, packed), 16 samples per step, lr 1e-3 after 3 warm-up steps. SFT: 480 training conversations, 60 held out;
    DPO and RM: 100 questions per task (20 held out), i.e. 480 training pairs (STEPS steps)."""
    tokenizer = train_chat_tokenizer(tmp_path / "tokenizer")
    data = write_example_data(str(tmp_path / "data"), sft_examples=480, sft_valid=60, preferences_per_task=100)
    files = (data.sft_train, data.sft_valid) if objective == "sft" else (data.preference_train, data.preference_valid)
    job = JobConfig()
    job.posttrain = PosttrainConfig(objective=objective, train_files=[files[0]], valid_files=[files[1]], epochs=1)
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", str(tokenizer)
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = 2, 64, 128
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.train.micro_batch_size, job.train.global_batch_size = 8, 16
    # Three-turn conversations in this small vocabulary run to ~290 tokens; a pair's sequences to under 128.
    job.train.seq_length = 384 if objective == "sft" else 128
    job.train.iters, job.train.eval_interval = 0, 1000  # iters from the epoch; eval_interval > STEPS: at the end
    job.optimizer.lr, job.scheduler.warmup_iters = 1e-3, 3
    job.logging.tensorboard, job.checkpoint.save_at_end = False, False
    return job
