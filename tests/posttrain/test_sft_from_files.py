"""SFT end to end from JSONL files, as a user runs it: `python -m megatron_sota.posttrain posttrain=sft` on the
repository's example conversations with a chat tokenizer, from a pretrained checkpoint; bad records stop the
command before any model exists; the export carries the run's chat template into transformers."""

from __future__ import annotations

import json
import os
import re

import pytest

from megatron_sota.config.job import JobConfig
from megatron_sota.posttrain.example_data import write_example_data
from tests.chat_tokenizer import train_chat_tokenizer
from tests.integration.train_command import run_train

SEQ = 256
MODEL = {"model.num_layers": 2, "model.hidden_size": 64, "model.ffn_hidden_size": 128}


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    """(tokenizer directory, example data) with a few dozen conversations."""
    root = tmp_path_factory.mktemp("sft_files")
    tokenizer = train_chat_tokenizer(root / "tokenizer")
    return str(tokenizer), write_example_data(str(root / "data"), sft_examples=48, sft_valid=8)


def _sft_args(tokenizer: str, train: str, **extra) -> list[str]:
    values = {
        "posttrain": "sft", "posttrain.train_files": f"[{train}]", "tokenizer": "huggingface",
        "tokenizer.model": tokenizer, "runtime.device": "cpu", **MODEL, "train.seq_length": SEQ,
        "train.global_batch_size": 4, "train.micro_batch_size": 2, "optimizer.lr": "1e-3",
        "scheduler.warmup_iters": 1, "logging.interval": 1, "logging.tensorboard": "false", **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def _posttrain(args, run_dir):
    return run_train(args, run_dir, module="megatron_sota.posttrain")


def _write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def _nothing_built(result, run_dir) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "parameters" not in result.stdout + result.stderr  # the model summary: never reached
    assert not os.path.exists(run_dir / "checkpoints") and not os.path.exists(run_dir / "config.yaml")


def test_bad_records_stop_the_command_with_file_and_line_before_the_model_is_built(chat_files, tmp_path):
    tokenizer, _ = chat_files
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    bad = _write_jsonl(tmp_path / "bad.jsonl", [
        good,
        {"conversation": good["messages"]},  # line 2: no "messages" key
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]},  # line 3
    ])
    run_dir = tmp_path / "run"
    result = _posttrain(_sft_args(tokenizer, bad), run_dir)
    _nothing_built(result, run_dir)
    assert f"{bad}:2" in result.stderr and "messages" in result.stderr
    assert f"{bad}:3" in result.stderr and "empty" in result.stderr
    assert f"{bad}:1" not in result.stderr


def test_a_conversation_longer_than_the_context_stops_the_command_before_the_model_is_built(chat_files, tmp_path):
    tokenizer, _ = chat_files
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    long = {"messages": [{"role": "user", "content": "apple " * SEQ}, {"role": "assistant", "content": "Yes."}]}
    data = _write_jsonl(tmp_path / "long.jsonl", [short, long])
    run_dir = tmp_path / "run"
    result = _posttrain(_sft_args(tokenizer, data), run_dir)
    _nothing_built(result, run_dir)
    expected = rf"{re.escape(data)}:2: expected at most {SEQ} tokens \(the sequence length\), found \d+"
    assert re.search(expected, result.stderr)
    assert f"{data}:1" not in result.stderr


def _pretrained(tokenizer: str, directory) -> str:
    """A base checkpoint: one pretraining step on mock tokens with the chat tokenizer's vocabulary."""
    from megatron_sota.training.trainer import pretrain

    job = JobConfig()
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", tokenizer
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = MODEL.values()
    job.data.mock, job.data.num_workers, job.runtime.device = True, 0, "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size, job.train.iters = SEQ, 2, 2, 1
    job.train.eval_interval, job.logging.tensorboard = 0, False
    job.checkpoint.dir = str(directory / "checkpoints")
    pretrain(job, str(directory))
    return job.checkpoint.dir


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sft_from_files_trains_saves_and_exports_the_runs_chat_template(chat_files, tmp_path):
    from transformers import AutoTokenizer

    from megatron_sota.conversion.cli import main as convert
    from megatron_sota.data.tokenizer import build_tokenizer
    from megatron_sota.posttrain.chat_template import ChatTemplate, encode_sft, template_text
    from megatron_sota.posttrain.records import read_sft_records
    from megatron_sota.posttrain.sft_data import encode_files, lay_out

    tokenizer_dir, data = chat_files
    # A template of the run's own (role headers end in ':'), which the export must ship, not the default.
    template = tmp_path / "colon_chatml.jinja"
    text = template_text(None).replace("message['role'] + '\\n'", "message['role'] + ':\\n'")
    text = text.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant:\\n'")
    template.write_text(text)
    base = _pretrained(tokenizer_dir, tmp_path / "base")
    run_dir = tmp_path / "sft"
    args = _sft_args(
        tokenizer_dir, data.sft_train, **{"posttrain.valid_files": f"[{data.sft_valid}]", "posttrain.epochs": 1,
                                          "posttrain.chat_template": str(template), "checkpoint.init_from": base,
                                          "train.eval_interval": 1000, "train.eval_iters": 1})
    result = _posttrain(args, run_dir)
    assert result.returncode == 0, "see captured stdout for the run's output"
    output = result.stdout + result.stderr

    tokenizer = build_tokenizer("HuggingFaceTokenizer", tokenizer_dir)
    rows = lay_out(encode_files([data.sft_train], str(template), True, tokenizer, SEQ), SEQ, True, "k")
    line = re.search(r"posttrain.train_files: 48 conversations packed into (\d+) rows of 256 tokens; "
                     r"packing efficiency ([\d.]+)%", output)
    assert line and int(line.group(1)) == len(rows.rows) < 48
    assert float(line.group(2)) == pytest.approx(100 * rows.efficiency, abs=0.05)
    assert f"initialised the weights from {base}" in output
    assert (run_dir / "posttrain.log").is_file()  # Hydra's job log is named after the entry point

    steps = len(rows.rows) // 4  # one epoch of rows in global batches of 4
    metrics = _metrics(run_dir)
    assert [row["step"] for row in metrics if "loss" in row] == list(range(1, steps + 1))
    assert [row["step"] for row in metrics if "val_loss" in row] == [steps]  # validation at the end
    assert (run_dir / "checkpoints" / f"iter_{steps:07d}").is_dir()

    # The export ships the run's template even after its file is gone.
    os.remove(template)
    hf_dir = str(tmp_path / "hf")
    assert convert(["export", "--load", str(run_dir / "checkpoints"), "--save", hf_dir, "--no-progress"]) == 0
    exported = AutoTokenizer.from_pretrained(hf_dir)
    run_template = ChatTemplate(text, "the run's", tokenizer)
    default = ChatTemplate.load(None, tokenizer)
    for record in read_sft_records([data.sft_valid]):
        ours = encode_sft(record, run_template, tokenizer).ids
        assert list(exported.apply_chat_template(list(record.messages), tokenize=True)["input_ids"]) == list(ours)
        assert ours != encode_sft(record, default, tokenizer).ids  # the comparison can tell the templates apart
