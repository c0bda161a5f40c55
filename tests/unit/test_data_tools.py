"""Tests of the data tools: stdlib corpus, tokenizer training/wrapping, preprocessing, shard checks.

Small corpus and vocabulary so the whole module runs in seconds; no GPU, no network.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_sota.data.encode_worker import TokenizerSpec
from megatron_sota.data.preprocess import PreprocessOptions, preprocess
from megatron_sota.data.shard_checks import check_shards
from megatron_sota.data.stdlib_corpus import write_stdlib_corpus
from megatron_sota.data.tokenizer import NullTokenizer, SentencePieceTokenizer, build_tokenizer
from megatron_sota.data.tokenizer_training import train_sentencepiece
from megatron_sota.errors import MegatronSotaError
from tests.tool_runner import run_tool

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
VOCAB_SIZE = 1000
MAX_FILES = 60


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("data_tools")


@pytest.fixture(scope="module")
def corpus(workdir: pathlib.Path) -> pathlib.Path:
    path = workdir / "corpus.jsonl"
    stats = write_stdlib_corpus(str(path), max_files=MAX_FILES)
    assert stats.docs == MAX_FILES
    return path


@pytest.fixture(scope="module")
def docs(corpus: pathlib.Path) -> list[str]:
    return [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tokenizer(corpus: pathlib.Path, workdir: pathlib.Path) -> SentencePieceTokenizer:
    result = train_sentencepiece(
        [str(corpus)], str(workdir / "spm"), vocab_size=VOCAB_SIZE, quiet=True
    )
    return SentencePieceTokenizer(result.model_path)


def _preprocess(corpus: pathlib.Path, prefix: pathlib.Path, tokenizer: SentencePieceTokenizer):
    return preprocess(
        PreprocessOptions(
            inputs=(str(corpus),),
            output_prefix=str(prefix),
            tokenizer=TokenizerSpec("SentencePieceTokenizer", model=tokenizer.model_path),
            append_eod=True,
            progress=False,
        )
    )


# --- stdlib corpus -------------------------------------------------------------------------


def test_corpus_is_deterministic_and_filtered(corpus: pathlib.Path, docs: list[str], tmp_path):
    again = tmp_path / "again.jsonl"
    write_stdlib_corpus(str(again), max_files=MAX_FILES)
    assert again.read_bytes() == corpus.read_bytes()
    assert len(docs) == MAX_FILES
    assert all(len(text) >= 200 for text in docs)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_corpus_heldout_split_partitions_documents(docs: list[str], tmp_path):
    main, held = tmp_path / "main.jsonl", tmp_path / "held.jsonl"
    stats = write_stdlib_corpus(
        str(main), max_files=MAX_FILES, heldout_path=str(held), heldout_fraction=0.3
    )
    main_docs = [json.loads(line)["text"] for line in main.read_text(encoding="utf-8").splitlines()]
    held_docs = [json.loads(line)["text"] for line in held.read_text(encoding="utf-8").splitlines()]
    assert (stats.docs, stats.heldout_docs) == (len(main_docs), len(held_docs))
    assert 0 < len(held_docs) < MAX_FILES
    assert sorted(main_docs + held_docs) == sorted(docs)


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_round_trips_code_and_unicode(tokenizer: SentencePieceTokenizer, docs: list[str]):
    code = "def f(x):\n\tif x:\n        return 'héllo ☃ 日本'  \n\n"
    samples = docs[:5] + [code, "  leading spaces"]
    for text in samples:
        ids = tokenizer.tokenize(text)
        assert ids and all(0 <= i < VOCAB_SIZE for i in ids)
        assert tokenizer.detokenize(ids) == text
    # Trained BPE merges must compress; pure byte fallback would give >= 1 token per byte.
    assert len(tokenizer.tokenize(docs[0])) < len(docs[0].encode("utf-8")) / 2


def test_tokenizer_special_ids_and_vocab(tokenizer: SentencePieceTokenizer):
    assert tokenizer.vocab_size == VOCAB_SIZE
    assert (tokenizer.eod, tokenizer.bos, tokenizer.pad) == (2, 1, 3)
    assert len(tokenizer.vocab) == VOCAB_SIZE
    assert all(tokenizer.vocab[piece] == i for i, piece in tokenizer.inv_vocab.items())


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(MegatronSotaError, match="nope.model"):
        build_tokenizer("SentencePieceTokenizer", str(missing))
    with pytest.raises(MegatronSotaError, match="GPT2BPETokenizer"):
        build_tokenizer("GPT2BPETokenizer", str(missing))


def test_null_tokenizer():
    tok = build_tokenizer("NullTokenizer", None, vocab_size=100)
    assert isinstance(tok, NullTokenizer)
    assert tok.tokenize(" 5 7\n98 ") == [5, 7, 98]
    assert tok.detokenize([5, 7]) == "5 7"
    assert tok.eod == 99
    with pytest.raises(MegatronSotaError, match="100"):
        tok.tokenize("3 100")


def test_training_is_reproducible(corpus: pathlib.Path, tmp_path):
    models = []
    for name in ("a", "b"):
        result = train_sentencepiece([str(corpus)], str(tmp_path / name), vocab_size=VOCAB_SIZE,
                                     input_sentence_size=500, quiet=True)
        tok = SentencePieceTokenizer(result.model_path)
        models.append([tok.inv_vocab[i] for i in range(tok.vocab_size)])
    assert models[0] == models[1]


# --- shard checks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard(corpus, tokenizer, workdir) -> str:
    _preprocess(corpus, workdir / "shard", tokenizer)
    return str(workdir / "shard_text_document")


def test_check_shards_returns_token_counts(shard: str):
    dataset = IndexedDataset(shard)  # keep alive: its index arrays view an mmap closed on delete
    expected = int(dataset.sequence_lengths.sum())
    assert check_shards([shard, shard], VOCAB_SIZE) == [expected, expected]


def test_check_shards_missing_prefix(shard: str, tmp_path):
    missing = str(tmp_path / "absent_text_document")
    with pytest.raises(MegatronSotaError, match=r"data\.paths\[1\].*absent_text_document\.bin"):
        check_shards([shard, missing], VOCAB_SIZE)


def test_check_shards_corrupted_magic(shard: str, tmp_path):
    bad = tmp_path / "bad_text_document"
    data = bytearray(pathlib.Path(shard + ".idx").read_bytes())
    data[:9] = b"NOTANIDX!"
    (tmp_path / "bad_text_document.idx").write_bytes(bytes(data))
    (tmp_path / "bad_text_document.bin").write_bytes(pathlib.Path(shard + ".bin").read_bytes())
    with pytest.raises(MegatronSotaError) as err:
        check_shards([str(bad)], VOCAB_SIZE)
    message = str(err.value)
    assert "bad_text_document.idx" in message and "MMIDIDX" in message and "NOTANIDX" in message


def test_check_shards_token_id_outside_vocab(shard: str):
    dataset = IndexedDataset(shard)
    max_id = max(int(dataset[i].max()) for i in range(len(dataset)))
    assert check_shards([shard], max_id + 1)  # exactly big enough passes
    with pytest.raises(MegatronSotaError) as err:
        check_shards([shard], max_id)
    message = str(err.value)
    assert f"vocabulary has {max_id} tokens" in message
    assert f"token id {max_id}" in message
    assert os.path.basename(shard) + ".bin" in message


def test_check_shards_truncated_bin(shard: str, tmp_path):
    cut = tmp_path / "cut_text_document"
    (tmp_path / "cut_text_document.idx").write_bytes(pathlib.Path(shard + ".idx").read_bytes())
    (tmp_path / "cut_text_document.bin").write_bytes(pathlib.Path(shard + ".bin").read_bytes()[:-2])
    with pytest.raises(MegatronSotaError, match="cut_text_document.bin"):
        check_shards([str(cut)], VOCAB_SIZE)


# --- tools never replace existing outputs without --overwrite -------------------------------


@pytest.mark.parametrize(
    "tool, flags, refused_flag, existing",
    [
        ("merge_datasets", ["--input", "no_such_shard", "--output-prefix", "merged"], "--output-prefix",
         ["merged.bin", "merged.idx"]),
        ("train_tokenizer", ["--input", "no_such.jsonl", "--model-prefix", "tok"], "--model-prefix",
         ["tok.model", "tok.vocab"]),
        ("train_tokenizer", ["--input", "no_such.jsonl", "--library", "huggingface", "--model-prefix", "tok"],
         "--model-prefix", ["tok/tokenizer.json"]),
        ("build_stdlib_corpus", ["--output", "corpus.jsonl"], "--output", ["corpus.jsonl"]),
        ("build_stdlib_corpus", ["--output", "new.jsonl", "--heldout-output", "heldout.jsonl"], "--heldout-output",
         ["heldout.jsonl"]),
    ],
    ids=["merge_datasets", "train_tokenizer", "train_tokenizer_hf", "build_stdlib_corpus", "stdlib_heldout"],
)
def test_tools_refuse_to_replace_existing_outputs_before_any_work(tool, flags, refused_flag, existing, tmp_path,
                                                                  monkeypatch, capsys):
    """Each names its flag and the existing files; the inputs named do not even exist: refused before reading them."""
    monkeypatch.chdir(tmp_path)
    for name in existing:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("the user's own file")
    code, _, err = run_tool(tool, flags, capsys)
    value = flags[flags.index(refused_flag) + 1]
    named = " and ".join(existing)
    verb, them = ("exists", "it") if len(existing) == 1 else ("exist", "them")
    assert code == 1
    assert f"{refused_flag} {value}: {named} already {verb}; pass --overwrite to replace {them}" in err, err
    assert all((tmp_path / name).read_text() == "the user's own file" for name in existing)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(existing)


def test_build_stdlib_corpus_replaces_its_output_with_overwrite(tmp_path, capsys):
    output = tmp_path / "corpus.jsonl"
    output.write_text("the user's own file")
    assert run_tool("build_stdlib_corpus", ["--output", str(output), "--max-files", "2", "--overwrite"], capsys)[0] == 0
    assert len(output.read_text().splitlines()) == 2
