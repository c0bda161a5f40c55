"""What a new user reads: the entry points' default output is the project's own story, libraries' chatter on request."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What the libraries print when nobody filters them: SentencePiece's trainer (C++ log lines and absl's
# banner), Python warnings ("<file>.py:<line>: FutureWarning: ..."), megatron-core's loggers, torchrun.
FOREIGN = re.compile(r"\.cc:\d+\]|absl::|Warning: |megatron\.core|OMP_NUM_THREADS|Traceback")

TOKENIZER_LINES = re.compile(r"reading lines: |trained sentencepiece tokenizer |\S.* flags for these files:$|  ")
TRAINING_LINES = re.compile(
    r"resolved config: \S+config\.yaml$|data mix: 1 sources|  source / prefix |  default  |      stdlib_text_document  "
    r"|model tiny: [\d,]+ parameters|layout: world 1 = |step +\d+/2 \| loss |validation at step 2: "
    r"|saved checkpoint |done at step 2: "
)
TRAINING = ("train.iters=2", "runtime.device=cpu", "train.seq_length=64", "train.global_batch_size=2",
            "train.micro_batch_size=1", "model.num_layers=2", "tokenizer=sentencepiece")


def _run(*argv: str) -> str:
    result = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def _lines(output: str) -> list[str]:
    return [line for line in output.split("\n") if line.strip()]  # a tqdm bar's \r updates stay one line


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    from megatron_sota.data.stdlib_corpus import write_stdlib_corpus

    path = str(tmp_path_factory.mktemp("console") / "corpus.jsonl")
    write_stdlib_corpus(path, max_files=20)
    return path


def test_tokenizer_training_prints_its_summary_and_none_of_sentencepieces_log(corpus, tmp_path):
    output = _run("tools/train_tokenizer.py", "--input", corpus, "--model-prefix", str(tmp_path / "tok"), "--vocab-size", "700")
    lines = _lines(output)
    assert any(line.startswith("trained sentencepiece tokenizer") for line in lines)
    assert [line for line in lines if FOREIGN.search(line) or not TOKENIZER_LINES.match(line)] == []


def _training(shards, *overrides: str) -> tuple[str, ...]:
    # A real SentencePiece tokenizer and a one-prefix blend, as in the quickstart.
    return ("-m", "megatron_sota.train", *TRAINING, f"tokenizer.model={shards.tokenizer_model}",
            f"data.paths=[{shards.prefix}]", *overrides)


def test_training_prints_only_its_own_lines_by_default(stdlib_shards, tmp_path):
    run_dir = tmp_path / "run"
    output = _run(*_training(stdlib_shards, f"hydra.run.dir={run_dir}"))
    lines = _lines(output)
    assert any(line.startswith("done at step 2") for line in lines)
    assert [line for line in lines if FOREIGN.search(line) or not TRAINING_LINES.match(line)] == []
    assert f"resolved config: {run_dir / 'config.yaml'}" in lines  # named, not echoed (that is DEBUG's)


def test_debug_level_shows_megatron_cores_own_log(stdlib_shards, tmp_path):
    output = _run(*_training(stdlib_shards, "logging.level=DEBUG", f"hydra.run.dir={tmp_path / 'run'}"))
    assert re.search(r"^info \[megatron\.core\.datasets\.\w+\]: ", output, re.MULTILINE)
    assert "done at step 2" in output
