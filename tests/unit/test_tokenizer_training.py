"""Tokenizer training: SentencePiece BPE/unigram and HF byte-level BPE from JSONL, parquet and text."""

from __future__ import annotations

import json
import os
import pathlib
import random
import sysconfig

import pyarrow
import pyarrow.parquet
import pytest
import sentencepiece
from tokenizers import Tokenizer, models

from megatron_sota.data.byte_level_bpe_training import (
    build_untrained,
    train_byte_level_bpe,
)
from megatron_sota.data.hf_tokenizer import gpt2_byte_level
from megatron_sota.data.tokenizer_corpus import MAX_VOCAB_SIZE, split_at_line_breaks
from megatron_sota.data.tokenizer_training import train_sentencepiece, train_tokenizer
from megatron_sota.errors import MegatronSotaError
from tests.tool_runner import run_tool

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
SOURCES = ["json/__init__.py", "json/decoder.py", "json/encoder.py", "json/scanner.py", "textwrap.py"]
CHAT = ["<|user|>", "<|assistant|>", "<|system|>"]
# Characters the corpus does not contain: only byte fallback can spell them.
UNSEEN = "emoji 🎉🚀 CJK 世界 你好, math ∮ E⋅da, NUL\x00 and é\u0301"


@pytest.fixture(scope="module")
def docs() -> list[str]:
    texts = [(STDLIB / name).read_text(encoding="utf-8") for name in SOURCES]
    corpus = "".join(texts)
    assert not any(ch in corpus for ch in "🎉🚀世界你好∮⋅\x00")
    return texts


@pytest.fixture(scope="module")
def inputs(docs: list[str], tmp_path_factory) -> dict[str, str]:
    """The same documents, in the same order, as JSONL, parquet and a directory of .txt files."""
    root = tmp_path_factory.mktemp("corpus")
    jsonl = root / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    parquet = root / "docs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": docs}), parquet)
    text_dir = root / "txt"
    text_dir.mkdir()
    for i, doc in enumerate(docs):
        (text_dir / f"{i:02d}.txt").write_text(doc, encoding="utf-8")
    return {"jsonl": str(jsonl), "parquet": str(parquet), "text": str(text_dir)}


def _pieces(model_path: str) -> list[str]:
    sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
    return [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]


# --- SentencePiece --------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_learns_the_same_model_from_jsonl_parquet_and_a_text_directory(
    model_type, inputs, tmp_path
):
    results = {
        fmt: train_sentencepiece(
            [path], str(tmp_path / fmt), vocab_size=700, model_type=model_type, quiet=True
        )
        for fmt, path in inputs.items()
    }
    assert len({r.corpus.lines_seen for r in results.values()}) == 1
    assert results["jsonl"].corpus.documents == len(SOURCES)
    pieces = {fmt: _pieces(r.model_path) for fmt, r in results.items()}
    assert len(pieces["jsonl"]) == 700
    assert pieces["jsonl"] == pieces["parquet"] == pieces["text"]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_special_tokens_and_byte_fallback_round_trip(
    model_type, inputs, docs, tmp_path
):
    result = train_sentencepiece(
        [inputs["jsonl"]], str(tmp_path / "tok"), vocab_size=800, model_type=model_type,
        special_tokens=CHAT, quiet=True,
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=result.model_path)
    assert [sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()] == [0, 1, 2, 3]
    assert [sp.PieceToId(t) for t in CHAT] == [4, 5, 6]
    text = f"<|system|>be brief<|user|>{UNSEEN}<|assistant|>{docs[1][:300]}"
    ids = sp.EncodeAsIds(text)
    for position, token in enumerate(CHAT):
        assert ids.count(4 + position) == 1, token
    assert sp.DecodeIds(ids) == text
    byte_pieces = [sp.IdToPiece(i) for i in ids if sp.IsByte(i)]
    assert "<0xF0>" in byte_pieces  # the emoji were spelled in bytes
    for doc in docs:
        assert sp.DecodeIds(sp.EncodeAsIds(doc)) == doc


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_same_seed_same_input_writes_identical_files(model_type, inputs, tmp_path):
    prefix = str(tmp_path / "tok")

    def train(seed: int) -> bytes:
        train_sentencepiece(
            [inputs["jsonl"], inputs["parquet"]], prefix, vocab_size=600, model_type=model_type,
            input_sentence_size=500, seed=seed, quiet=True,
        )
        return pathlib.Path(prefix + ".model").read_bytes()

    first = train(7)
    assert train(7) == first
    assert train(8) != first  # the seed picks the sample, so it must show in the model


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_vocab_too_large_for_corpus_names_size_and_corpus(
    model_type, inputs, tmp_path
):
    with pytest.raises(MegatronSotaError, match=r"--vocab-size 60000.*found at most \d+ in .*docs\.jsonl"):
        train_sentencepiece(
            [inputs["jsonl"]], str(tmp_path / "tok"), vocab_size=60_000, model_type=model_type,
            quiet=True,
        )


def test_sentencepiece_vocab_too_small_for_characters_names_what_is_needed(inputs, tmp_path):
    with pytest.raises(MegatronSotaError, match=r"--vocab-size 265: expected at least \d+ .*docs\.jsonl"):
        train_sentencepiece([inputs["jsonl"]], str(tmp_path / "tok"), vocab_size=265, quiet=True)


def test_sentencepiece_vocab_range(inputs, tmp_path):
    for bad in (260, 4 + 256 + len(CHAT), MAX_VOCAB_SIZE + 1):
        with pytest.raises(MegatronSotaError, match=rf"--vocab-size: .*to 262144 .*found {bad}"):
            train_sentencepiece(
                [inputs["jsonl"]], str(tmp_path / "tok"), vocab_size=bad, special_tokens=CHAT,
                quiet=True,
            )


# --- HF byte-level BPE ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(inputs, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("hf") / "tok"
    result = train_byte_level_bpe(
        [inputs["jsonl"], inputs["text"]], str(out), vocab_size=1200, special_tokens=CHAT,
        quiet=True,
    )
    assert result.vocab_size == 1200
    assert sorted(os.path.basename(f) for f in result.files) == sorted(os.listdir(out))
    return out


def test_byte_level_bpe_writes_the_config_files_transformers_and_megatron_expect(hf_dir):
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|endoftext|>"
    assert config["pad_token"] == "<|pad|>"
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    assert isinstance(config["model_max_length"], int)
    special_map = json.loads((hf_dir / "special_tokens_map.json").read_text())
    assert special_map["eos_token"] == "<|endoftext|>"
    assert special_map["additional_special_tokens"] == CHAT
    vocab = json.loads((hf_dir / "vocab.json").read_text())
    assert len(vocab) == 1200 and vocab["<|endoftext|>"] == 0
    merges = (hf_dir / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == 1200 - 2 - len(CHAT) - 256


def test_byte_level_bpe_special_tokens_are_single_ids_and_any_text_round_trips(hf_dir, docs):
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|pad|>") == 1
    assert [tok.token_to_id(t) for t in CHAT] == [2, 3, 4]
    text = f"<|system|>be brief<|user|>{UNSEEN}<|assistant|>{docs[0][:300]}<|endoftext|>"
    ids = tok.encode(text).ids
    for token_id in (0, 2, 3, 4):
        assert ids.count(token_id) == 1
    assert tok.decode(ids, skip_special_tokens=False) == text
    rng = random.Random(0)
    for _ in range(20):
        code_points = [rng.randrange(0x110000) for _ in range(40)]
        sample = "".join(chr(c) for c in code_points if not 0xD800 <= c < 0xE000)
        assert tok.decode(tok.encode(sample).ids, skip_special_tokens=False) == sample
    for doc in docs:
        assert tok.decode(tok.encode(doc).ids) == doc


def test_vocab_and_merges_give_the_same_ids_as_tokenizer_json(hf_dir, docs):
    full = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    gpt2, _ = build_untrained()
    gpt2.model = models.BPE.from_file(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt"))
    for text in [*docs, UNSEEN]:
        ids = gpt2.encode(text).ids
        assert ids == full.encode(text).ids
        assert len(ids) < len(text.encode("utf-8"))  # merges were applied, not just bytes


def test_line_pieces_pre_tokenize_like_the_whole_text(docs):
    pre = gpt2_byte_level(models.BPE()).pre_tokenizer  # the split every byte-level type uses
    rng = random.Random(0)
    alphabet = ["a", "Z", "7", "_", "(", "'s", " ", "  ", "\t", "\n", "\r\n", "\u3000", "\x1c", "é", "世", "🎉", "\f"]
    texts = [*docs, *("".join(rng.choice(alphabet) for _ in range(200)) for _ in range(300))]
    for text in texts:
        pieces = split_at_line_breaks(text)
        assert "".join(pieces) == text
        words = [w for w, _ in pre.pre_tokenize_str(text)]
        assert [w for p in pieces for w, _ in pre.pre_tokenize_str(p)] == words
    assert len(split_at_line_breaks(docs[0])) > 100


def test_byte_level_bpe_same_seed_same_input_writes_identical_files(inputs, tmp_path):
    out = tmp_path / "tok"

    def train(seed: int) -> dict[str, bytes]:
        train_byte_level_bpe(
            [inputs["parquet"]], str(out), vocab_size=900, input_sentence_size=500, seed=seed,
            special_tokens=CHAT, quiet=True,
        )
        return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}

    first = train(7)
    assert len(first) == 5
    assert train(7) == first
    assert train(8)["merges.txt"] != first["merges.txt"]


def test_byte_level_bpe_vocab_too_large_for_corpus_names_size_and_corpus(inputs, tmp_path):
    with pytest.raises(MegatronSotaError, match=r"--vocab-size 262144: .*found \d+ in .*docs\.parquet"):
        train_byte_level_bpe(
            [inputs["parquet"]], str(tmp_path / "tok"), vocab_size=MAX_VOCAB_SIZE, quiet=True
        )
    assert not (tmp_path / "tok").exists()


def test_byte_level_bpe_vocab_range(inputs, tmp_path):
    for bad in (258, 258 + len(CHAT), MAX_VOCAB_SIZE + 1, 0):
        with pytest.raises(MegatronSotaError, match=rf"--vocab-size: .*to 262144 .*found {bad}"):
            train_byte_level_bpe(
                [inputs["jsonl"]], str(tmp_path / "tok"), vocab_size=bad, special_tokens=CHAT,
                quiet=True,
            )


# --- errors both libraries share --------------------------------------------------------------


@pytest.mark.parametrize("library", ["sentencepiece", "huggingface"])
@pytest.mark.parametrize(
    "tokens, found",
    [
        (["<|user|>", "<|user|>"], "found '<|user|>' twice"),
        (["<|a b|>"], "without whitespace"),
        ([""], "non-empty"),
    ],
)
def test_bad_special_tokens_are_named(library, tokens, found, inputs, tmp_path):
    with pytest.raises(MegatronSotaError, match=rf"--special-tokens: .*{found}".replace("|", r"\|")):
        train_tokenizer(library, [inputs["jsonl"]], str(tmp_path / "tok"), 1000, special_tokens=tokens)


@pytest.mark.parametrize(
    "library, token", [("sentencepiece", "</s>"), ("sentencepiece", "<0x41>"), ("huggingface", "<|endoftext|>")]
)
def test_special_token_that_is_built_in_is_rejected(library, token, inputs, tmp_path):
    with pytest.raises(MegatronSotaError, match=f"built-in .*found '{token}'".replace("|", r"\|")):
        train_tokenizer(library, [inputs["jsonl"]], str(tmp_path / "tok"), 1000, special_tokens=[token])


@pytest.mark.parametrize("library", ["sentencepiece", "huggingface"])
@pytest.mark.parametrize("sample", [0, 100])
def test_no_text_under_the_key_names_inputs_and_key(library, sample, inputs, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "   "}\n{"content": "x = 1"}\nnot json\n', encoding="utf-8")
    with pytest.raises(MegatronSotaError, match=r"--input .*empty\.jsonl: .*'text'.*found none"):
        train_tokenizer(
            library, [str(empty)], str(tmp_path / "tok"), 1000, input_sentence_size=sample, quiet=True
        )


@pytest.mark.parametrize("library", ["sentencepiece", "huggingface"])
@pytest.mark.parametrize("sample", [0, 100])
def test_reader_errors_surface_unchanged_from_inside_the_trainer(library, sample, inputs, tmp_path):
    # A parquet file without the column fails inside the trainer's read callback when streaming.
    with pytest.raises(MegatronSotaError, match=r"^input file '.*docs\.parquet': expected text col"):
        train_tokenizer(
            library, [inputs["text"], inputs["parquet"]], str(tmp_path / "tok"), 1000,
            json_key="content", input_sentence_size=sample, quiet=True,
        )


def test_huggingface_output_that_is_a_file_is_named(inputs, tmp_path):
    (tmp_path / "tok").write_text("")
    with pytest.raises(MegatronSotaError, match=r"--model-prefix .*tok': expected a directory"):
        train_tokenizer("huggingface", [inputs["jsonl"]], str(tmp_path / "tok"), 1000, quiet=True)


def test_missing_input_is_named(tmp_path):
    with pytest.raises(MegatronSotaError, match=r"--input .*nope\*\.jsonl"):
        train_tokenizer("huggingface", [str(tmp_path / "nope*.jsonl")], str(tmp_path / "tok"), 1000)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--library", "fasttext"], "--library: expected one of sentencepiece, huggingface, found 'fasttext'"),
        (["--model-type", "char"], "--model-type: expected one of bpe, unigram"),
        (["--library", "huggingface", "--model-type", "unigram"], "--model-type: expected bpe"),
        (["--library", "huggingface", "--character-coverage", "0.99"], "--character-coverage: applies"),
        (["--model-max-length", "4096"], "--model-max-length: applies"),
        (["--vocab-size", "300000"], "--vocab-size: expected an integer"),
        (["--input-sentence-size", "-1"], "--input-sentence-size: expected an integer >= 0"),
    ],
)
def test_cli_rejects_bad_flags_with_the_flag_named(flags, named, inputs, tmp_path, capsys):
    argv = ["--input", inputs["jsonl"], "--model-prefix", str(tmp_path / "tok"), "--quiet", *flags]
    code, _, err = run_tool("train_tokenizer", argv, capsys)
    assert code == 1
    assert named in err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("library", ["sentencepiece", "huggingface"])
def test_cli_prints_preprocess_flags_for_the_files_it_wrote(library, inputs, tmp_path, capsys):
    prefix = tmp_path / "tok"
    argv = ["--library", library, "--input", inputs["text"], "--model-prefix", str(prefix),
            "--vocab-size", "700", "--special-tokens", *CHAT, "--quiet"]
    code, out, _ = run_tool("train_tokenizer", argv, capsys)
    assert code == 0
    if library == "sentencepiece":
        assert f"--tokenizer-type SentencePieceTokenizer --tokenizer-model {prefix}.model" in out
        assert os.path.isfile(f"{prefix}.model")
    else:
        assert f"--tokenizer-type HuggingFaceTokenizer --tokenizer-model {prefix}\n" in out
        assert (f"--tokenizer-type GPT2BPETokenizer --vocab-file {prefix}/vocab.json "
                f"--merge-file {prefix}/merges.txt") in out
        assert os.path.isfile(prefix / "tokenizer.json")
