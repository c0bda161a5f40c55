"""Shared fixtures: a real corpus (the standard library's sources), its tokenizer and shards, a model trained on it and
its Hugging Face export; the modules that run_distributed's ranks start with (tests/rank_preload.py); and a note on unmarked tests that are slow, so the fast
tier (`pytest -m "not slow and not slurm"`) stays fast."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from megatron_sota.quiet import KNOWN_WARNINGS, quiet_megatron
from tests.rank_preload import RANK_PRELOAD

# The known harmless warnings are listed once, in megatron_sota/quiet.py, for the tools and the tests alike;
# any other warning shows in the summary. Here for the conftest files' own imports of megatron-core...
quiet_megatron()


def pytest_configure(config):
    # ...and as pytest.ini filters for every test (pytest resets the filters around each one).
    for category, message in KNOWN_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")


@pytest.fixture(scope="session", autouse=True)
def preloaded_ranks():
    # The forkserver starts at the first run_distributed call, after this: every rank of the session has these.
    from megatron_sota.runtime import local_ranks

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_ranks, "_PRELOAD", (*local_ranks._PRELOAD, *RANK_PRELOAD))
        yield


@dataclass(frozen=True)
class StdlibShards:
    prefix: str
    """data.paths entry: <dir>/stdlib_text_document"""
    tokenizer_model: str
    vocab_size: int


@pytest.fixture(scope="session")
def stdlib_shards(tmp_path_factory) -> StdlibShards:
    from megatron_sota.data.encode_worker import TokenizerSpec
    from megatron_sota.data.preprocess import PreprocessOptions, preprocess
    from megatron_sota.data.stdlib_corpus import write_stdlib_corpus
    from megatron_sota.data.tokenizer_training import train_sentencepiece

    # 1900 is not a multiple of 128, so the vocabulary is padded, and padding to a multiple
    # of 128 * tp (as Megatron-LM does) would make TP=2 a different model from TP=1.
    root = tmp_path_factory.mktemp("stdlib")
    corpus = os.path.join(root, "stdlib.jsonl")
    write_stdlib_corpus(corpus, max_files=150)
    train_sentencepiece([corpus], os.path.join(root, "tok"), vocab_size=1900, quiet=True)
    preprocess(
        PreprocessOptions(
            inputs=(corpus,),
            output_prefix=os.path.join(root, "stdlib"),
            tokenizer=TokenizerSpec("SentencePieceTokenizer", model=os.path.join(root, "tok.model")),
            append_eod=True,
            progress=False,
        )
    )
    return StdlibShards(os.path.join(root, "stdlib_text_document"), os.path.join(root, "tok.model"), 1900)


@pytest.fixture(scope="session")
def checkpoint(stdlib_shards, tmp_path_factory) -> str:
    """tiny trained 20 steps on the stdlib corpus (a trained model: no near-ties between the top tokens)."""
    from megatron_sota.runtime.local_ranks import run_distributed
    from tests.distributed.jobs import stdlib_job
    from tests.distributed.probes import pretrain_probe

    run_dir = str(tmp_path_factory.mktemp("gen"))
    job = stdlib_job(stdlib_shards)
    job.train.iters = 20
    run_distributed(pretrain_probe, 1, job, run_dir)
    return os.path.join(run_dir, "checkpoints")


@pytest.fixture(scope="session")
def hf_export(checkpoint, tmp_path_factory) -> str:
    """`checkpoint` exported in fp32 to a Hugging Face Llama directory (weights, config, tokenizer)."""
    from megatron_sota.conversion.cli import main as convert

    out = str(tmp_path_factory.mktemp("hf_export") / "tiny")
    assert convert(["export", "--load", checkpoint, "--save", out, "--dtype", "fp32"]) == 0
    return out


@pytest.fixture(scope="session")
def web_run(tmp_path_factory, stdlib_shards):
    """tools/curate.py's web pipeline run locally on the planted corpus (tests/curation/corpus.py), tokenized;
    shared by the curation tests and the SLURM comparison."""
    from tests.curation.runs import make_web_run

    return make_web_run(tmp_path_factory.mktemp("curate_web"), stdlib_shards.tokenizer_model)


# A test that takes this long belongs in the slow tier (marker `slow`, see pytest.ini); a loaded machine can
# push a fast test past it, so this is a note at the end of the run, not a failure.
FAST_TIER_LIMIT_S = 15.0


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    took: dict[str, float] = {}
    for report in (r for reports in terminalreporter.stats.values() for r in reports):
        if getattr(report, "when", None) not in ("setup", "call"):
            continue  # warning reports and teardowns
        if "slow" not in report.keywords and "slurm" not in report.keywords:
            took[report.nodeid] = took.get(report.nodeid, 0.0) + report.duration
    over = sorted(((seconds, nodeid) for nodeid, seconds in took.items() if seconds > FAST_TIER_LIMIT_S), reverse=True)
    if over:
        terminalreporter.write_sep("-", f"fast-tier tests (neither slow nor slurm) that took over {FAST_TIER_LIMIT_S:.0f} s (setup and call)")
        for seconds, nodeid in over:
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")
