"""A reward model meets the trainer's language-model features: in-loop evaluation tasks are refused with the other
config problems, and the in-loop Hugging Face export runs only with a tokenizer that has a pad id other than eos."""

from __future__ import annotations

import os

import pytest

from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from tests.posttrain.pair_examples import rm_job, use_fake_pairs

CPU = Machine(cuda=False, transformer_engine=False)


def test_eval_tasks_are_refused_for_a_reward_model_with_the_other_problems():
    job = rm_job()
    job.eval.tasks, job.eval.interval = ["hellaswag"], 2
    job.posttrain.beta = 0.0  # another problem, listed in the same message
    with pytest.raises(MegatronSotaError) as raised:
        validate_job(job, 1, CPU)
    message = str(raised.value)
    assert "eval.tasks=['hellaswag'] with posttrain=rm: the tasks score a causal language model" in message
    assert "posttrain.beta" in message
    job.posttrain.beta = 0.1
    job.posttrain.objective = "dpo"  # a policy is a language model: its tasks are scored
    validate_job(job, 1, CPU)
    job.posttrain.objective, job.eval.interval = "rm", 0  # no in-loop evaluation: nothing to refuse
    validate_job(job, 1, CPU)


def test_an_in_loop_export_of_a_reward_model_without_a_distinct_pad_id_is_refused_before_the_run(tmp_path, monkeypatch):
    from megatron_sota.posttrain.run import posttrain

    use_fake_pairs(monkeypatch)
    job = rm_job()  # NullTokenizer: eos only, no pad token
    job.checkpoint.export_hf_every = 2
    expected = (r"checkpoint.export_hf_every=2 with posttrain=rm: exporting a reward model needs a pad token id .* "
                r"found none in tokenizer.type=NullTokenizer")
    with pytest.raises(MegatronSotaError, match=expected):
        posttrain(job, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def _sentencepiece(tmp_path, pad_id: int):
    sentencepiece = pytest.importorskip("sentencepiece")
    from megatron_sota.data.tokenizer import build_tokenizer

    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"the answer to {i} plus {i} is {2 * i}" for i in range(200)))
    prefix = str(tmp_path / f"pad{pad_id}")
    sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=prefix, vocab_size=40, pad_id=pad_id,
                                             minloglevel=2)
    return build_tokenizer("SentencePieceTokenizer", prefix + ".model")


def test_an_in_loop_export_of_a_reward_model_takes_the_tokenizers_own_pad_id(tmp_path):
    from megatron_sota.conversion.tokenizer_export import special_token_ids
    from megatron_sota.posttrain.reward import _check_in_loop_export

    job = rm_job()
    job.tokenizer.type = "SentencePieceTokenizer"
    job.checkpoint.export_hf_every = 2
    with_pad = _sentencepiece(tmp_path, pad_id=3)
    assert special_token_ids(with_pad)["pad_token_id"] == 3 != with_pad.eod
    _check_in_loop_export(job, with_pad)  # the export writes pad_token_id 3: LlamaForSequenceClassification scores
    with pytest.raises(MegatronSotaError, match="found none in tokenizer.type=SentencePieceTokenizer"):
        _check_in_loop_export(job, _sentencepiece(tmp_path, pad_id=-1))
    job.checkpoint.export_hf_every = 0
    _check_in_loop_export(job, _sentencepiece(tmp_path, pad_id=-1))  # no in-loop export: nothing to refuse
