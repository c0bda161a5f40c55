"""quiet.py hides only named, known messages; SentencePiece's trainer log shows only when asked for."""

from __future__ import annotations

import logging
import os
import warnings

import pytest

from megatron_sota.quiet import KNOWN_LOG_RECORDS, KNOWN_WARNINGS, quiet_megatron
from megatron_sota.runtime.log import setup_logging
from tests.logger_state import loggers_kept


def _shown(category: type[Warning], message: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_megatron()
        warnings.warn(message, category)
    return bool(caught)


def test_known_warnings_are_hidden_by_name():
    assert not _shown(FutureWarning, "`load_state_dict` is deprecated and will be removed in future versions.")
    assert not _shown(UserWarning, "Transformer Engine and Apex are not installed. Falling back to Torch optimizers.")
    assert not _shown(DeprecationWarning, "Warning: tp_group is None, using default tp group.")
    assert not _shown(UserWarning, "There are still pending all-gather tasks, process them. Bucket status: {}.")


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning, UserWarning])
def test_new_deprecations_and_unknown_warnings_still_show(category):
    # What an upgrade of megatron-core or torch brings must reach the console and CI.
    assert _shown(category, "`megatron.core.some_new_api` is deprecated and will be removed in 0.20")


def test_a_known_message_of_another_category_still_shows():
    assert _shown(RuntimeWarning, "Transformer Engine and Apex are not installed")


def test_known_messages_can_be_pytest_filterwarnings_lines():
    # tests/conftest.py feeds them to pytest as ignore:<message>:<category>, which a colon would cut.
    assert all(":" not in message for _, message in KNOWN_WARNINGS)
    assert len({message for _, message in KNOWN_WARNINGS}) == len(KNOWN_WARNINGS)


@pytest.fixture
def megatron_console(capsys):
    with loggers_kept():
        setup_logging()
        quiet_megatron()
        yield capsys


def test_megatron_known_record_is_hidden_but_its_other_warnings_and_errors_show(megatron_console):
    name, _ = KNOWN_LOG_RECORDS[0]
    blend_log = logging.getLogger(name)
    blend_log.warning("Building a BlendedDataset for a single MegatronDataset")
    blend_log.warning("a warning megatron-core did not give before")
    logging.getLogger("megatron.core.datasets.gpt_dataset").error("cannot open the index")
    fsdp_log = logging.getLogger(KNOWN_LOG_RECORDS[1][0])
    fsdp_log.warning("[Rank 1] Megatron-FSDP is using device cpu instead of the current device cuda:0, which may ...")
    fsdp_log.warning("[Rank 1] Megatron-FSDP is using device cuda:1 instead of the current device cuda:0, which may ...")
    err = megatron_console.readouterr().err
    assert "single MegatronDataset" not in err and "device cpu instead" not in err
    assert "device cuda:1 instead" in err  # a GPU run's mismatch is a real one
    assert f"warning [{name}]: a warning megatron-core did not give before" in err
    assert "error [megatron.core.datasets.gpt_dataset]: cannot open the index" in err


def test_quiet_megatron_twice_adds_each_record_filter_once():
    quiet_megatron()
    quiet_megatron()
    for name, _ in KNOWN_LOG_RECORDS:
        assert len(logging.getLogger(name).filters) == 1


def _train_tokenizer(tmp_path, verbose: bool) -> None:
    from megatron_sota.data.stdlib_corpus import write_stdlib_corpus
    from megatron_sota.data.tokenizer_training import train_tokenizer

    corpus = tmp_path / "corpus.jsonl"
    if not corpus.exists():
        write_stdlib_corpus(str(corpus), max_files=20)
    train_tokenizer("sentencepiece", [str(corpus)], os.path.join(tmp_path, "tok"), 700, quiet=True, verbose=verbose)


def test_sentencepiece_trainer_log_is_hidden_unless_verbose(tmp_path, capfd):
    # SentencePiece writes from C++ to file descriptor 2: only capfd sees it.
    _train_tokenizer(tmp_path, verbose=False)
    quiet = capfd.readouterr()
    assert "trainer_interface.cc" not in quiet.err and "bpe_model_trainer.cc" not in quiet.err
    _train_tokenizer(tmp_path, verbose=True)
    verbose = capfd.readouterr()
    assert "trainer_interface.cc" in verbose.err and "Saving model:" in verbose.err


def test_a_deprecation_met_by_our_own_package_fails_the_tests():
    # pytest.ini's error::DeprecationWarning:megatron_sota: CI sees an upgrade's new deprecations.
    with pytest.raises(DeprecationWarning, match="old_api is deprecated"):
        warnings.warn_explicit("old_api is deprecated", DeprecationWarning, "data/readers.py", 1, module="megatron_sota.data.readers")
