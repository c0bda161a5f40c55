"""Specification of every tokenizer type build_tokenizer accepts: ids, eod, batch encoding, pickling, errors.

Tokenizers are trained here on a few standard-library sources (under a second); nothing is downloaded.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pickle
import sysconfig

import pytest
import sentencepiece
import tiktoken
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from megatron_sota.data.hf_tokenizer import gpt2_byte_level
from megatron_sota.data.tokenizer import TOKENIZER_TYPES, build_tokenizer
from megatron_sota.errors import MegatronSotaError

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
TRAIN_FILES = ("textwrap.py", "glob.py", "fnmatch.py", "bisect.py", "heapq.py")
HELD_OUT_FILES = ("shlex.py", "colorsys.py")
EOD = "<|endoftext|>"
CUSTOM_EOS = "<|doc_end|>"
# OpenAI's GPT-2 split regex (tiktoken's "gpt2" pat_str).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
NON_ASCII = "naïve café — 日本語のテキスト, emoji 👍🏽 and ß\tтекст\n"


def _read(name: str) -> str:
    return (STDLIB / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Held-out documents: code, an empty document, non-ASCII text, lone whitespace."""
    return [_read(name) for name in HELD_OUT_FILES] + ["", NON_ASCII, " ", "x = 1\n\n\n"]


def _byte_level_bpe(vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    tokenizer = gpt2_byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_read(name) for name in TRAIN_FILES], trainer)
    return tokenizer


def _byte_of_char() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted (char -> byte)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    char_of = {b: chr(b) for b in printable}
    unprintable = [b for b in range(256) if b not in char_of]
    char_of.update({b: chr(256 + n) for n, b in enumerate(unprintable)})
    return {c: b for b, c in char_of.items()}


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """tokenizer.json + vocab.json + merges.txt of one trained byte-level BPE (800 ids)."""
    directory = tmp_path_factory.mktemp("bpe")
    tokenizer = _byte_level_bpe(800, [EOD, CUSTOM_EOS])
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))
    return directory


@pytest.fixture(scope="module")
def bpe_ranks(bpe_dir: pathlib.Path) -> dict[bytes, int]:
    """The trained BPE's ordinary tokens as raw bytes -> id."""
    byte_of = _byte_of_char()
    vocab = json.loads((bpe_dir / "vocab.json").read_text(encoding="utf-8"))
    return {
        bytes(byte_of[c] for c in token): i
        for token, i in vocab.items()
        if token not in (EOD, CUSTOM_EOS)
    }


@pytest.fixture(scope="module")
def tiktoken_vocab(
    tmp_path_factory: pytest.TempPathFactory, bpe_ranks: dict[bytes, int]
) -> pathlib.Path:
    """The same BPE in megatron-core's tiktoken format: single bytes first, then merges in rank order."""
    merged = sorted((rank, token) for token, rank in bpe_ranks.items() if len(token) > 1)
    ordered = [bytes([b]) for b in range(256)] + [token for _, token in merged]
    entries = [
        {
            "rank": i,
            "token_bytes": base64.b64encode(t).decode(),
            "token_str": t.decode("utf-8", "replace"),
        }
        for i, t in enumerate(ordered)
    ]
    path = tmp_path_factory.mktemp("tiktoken") / "vocab.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(
            [line for name in TRAIN_FILES for line in _read(name).splitlines() if line]
        ),
        model_prefix=str(prefix),
        vocab_size=400,
        byte_fallback=True,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture(scope="module")
def tokenizers_by_type(bpe_dir, tiktoken_vocab, spm_model) -> dict:
    tiktoken_entries = len(json.loads(tiktoken_vocab.read_text()))
    return {
        "SentencePieceTokenizer": build_tokenizer("SentencePieceTokenizer", str(spm_model)),
        "GPTSentencePieceTokenizer": build_tokenizer("GPTSentencePieceTokenizer", str(spm_model)),
        "HuggingFaceTokenizer": build_tokenizer(
            "HuggingFaceTokenizer", str(bpe_dir / "tokenizer.json")
        ),
        "GPT2BPETokenizer": build_tokenizer(
            "GPT2BPETokenizer",
            vocab_file=str(bpe_dir / "vocab.json"),
            merge_file=str(bpe_dir / "merges.txt"),
        ),
        "TikTokenizer": build_tokenizer(
            "TikTokenizer", str(tiktoken_vocab), 1000 + tiktoken_entries
        ),
        "NullTokenizer": build_tokenizer("NullTokenizer", vocab_size=100),
    }


def test_dataset_cache_identity_is_class_paths_and_options(tokenizers_by_type, bpe_dir, tiktoken_vocab, spm_model):
    # megatron-core hashes unique_identifiers into the names of its cached index files; this is the
    # layout megatron-core's former legacy tokenizer base wrote, so caches from before stay valid.
    tiktoken_size = str(tokenizers_by_type["TikTokenizer"].vocab_size)
    expected = {
        "SentencePieceTokenizer": {"class": "SentencePieceTokenizer", "tokenizer_path": [str(spm_model)]},
        "GPTSentencePieceTokenizer": {"class": "SentencePieceTokenizer", "tokenizer_path": [str(spm_model)]},
        "HuggingFaceTokenizer": {
            "class": "HuggingFaceTokenizer", "tokenizer_path": [str(bpe_dir / "tokenizer.json")]
        },
        "GPT2BPETokenizer": {
            "class": "GPT2BPETokenizer",
            "tokenizer_path": [str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt")],
        },
        "TikTokenizer": {
            "class": "TikTokenizer",
            "tokenizer_path": [str(tiktoken_vocab)],
            "pattern": "v2",
            "num_special_tokens": "1000",
            "vocab_size": tiktoken_size,
        },
        "NullTokenizer": {"class": "NullTokenizer", "tokenizer_path": [], "vocab_size": "100"},
    }
    for tokenizer_type, tokenizer in tokenizers_by_type.items():
        # json.dumps, as megatron-core serialises it: key order is part of the hashed text.
        assert json.dumps(tokenizer.unique_identifiers) == json.dumps(expected[tokenizer_type])


def _inputs_for(tokenizer_type: str, texts: list[str]) -> list[str]:
    return ["3 1 4", "", "15 9 2 6 99"] if tokenizer_type == "NullTokenizer" else texts


def test_every_registered_type_is_built(tokenizers_by_type):
    assert sorted(tokenizers_by_type) == sorted(TOKENIZER_TYPES)


@pytest.mark.parametrize("tokenizer_type", TOKENIZER_TYPES)
def test_tokenize_batch_equals_tokenize_per_text(tokenizers_by_type, texts, tokenizer_type):
    tokenizer = tokenizers_by_type[tokenizer_type]
    inputs = _inputs_for(tokenizer_type, texts)
    batch = tokenizer.tokenize_batch(inputs)
    assert batch == [tokenizer.tokenize(text) for text in inputs]
    assert all(type(i) is int for ids in batch for i in ids)
    assert sum(map(len, batch)) > len(inputs)


@pytest.mark.parametrize("tokenizer_type", TOKENIZER_TYPES)
def test_pickled_tokenizer_gives_the_same_ids(tokenizers_by_type, texts, tokenizer_type):
    tokenizer = tokenizers_by_type[tokenizer_type]
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert type(clone) is type(tokenizer) and clone is not tokenizer
    inputs = _inputs_for(tokenizer_type, texts)
    assert clone.tokenize_batch(inputs) == tokenizer.tokenize_batch(inputs)
    assert (clone.eod, clone.vocab_size, clone.pad) == (
        tokenizer.eod,
        tokenizer.vocab_size,
        tokenizer.pad,
    )


@pytest.mark.parametrize("tokenizer_type", TOKENIZER_TYPES)
def test_eod_and_pad_are_ids_of_the_vocabulary(tokenizers_by_type, tokenizer_type):
    tokenizer = tokenizers_by_type[tokenizer_type]
    assert 0 <= tokenizer.eod < tokenizer.vocab_size
    assert tokenizer.eos == tokenizer.eod
    assert 0 <= tokenizer.pad < tokenizer.vocab_size


@pytest.mark.parametrize(
    "tokenizer_type", ["HuggingFaceTokenizer", "GPT2BPETokenizer", "TikTokenizer"]
)
def test_byte_level_types_round_trip_text_exactly(tokenizers_by_type, texts, tokenizer_type):
    tokenizer = tokenizers_by_type[tokenizer_type]
    for text in texts:
        ids = tokenizer.tokenize(text)
        assert tokenizer.detokenize(ids) == text
    assert max(max(ids) for ids in tokenizer.tokenize_batch(texts) if ids) < tokenizer.vocab_size


def test_hf_and_gpt2_bpe_agree_on_the_same_vocabulary(tokenizers_by_type, texts):
    hf = tokenizers_by_type["HuggingFaceTokenizer"]
    gpt2 = tokenizers_by_type["GPT2BPETokenizer"]
    assert hf.tokenize_batch(texts) == gpt2.tokenize_batch(texts)
    assert hf.vocab_size == gpt2.vocab_size == 800
    assert hf.eod == gpt2.eod == gpt2.vocab[EOD]


def test_gpt2_bpe_matches_tiktoken_built_from_the_same_ranks(
    tokenizers_by_type, texts, bpe_dir, bpe_ranks
):
    # Independent implementation: tiktoken merges by rank of the merged bytes. For a trained BPE, ids
    # grow with merge order, so ids are valid ranks; this holds only if every merge makes a new token.
    merges = (bpe_dir / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len({m.replace(" ", "") for m in merges}) == len(merges)
    encoding = tiktoken.Encoding(
        "trained-gpt2-style", pat_str=GPT2_PATTERN, mergeable_ranks=bpe_ranks, special_tokens={}
    )
    gpt2 = tokenizers_by_type["GPT2BPETokenizer"]
    assert gpt2.tokenize_batch(texts) == encoding.encode_ordinary_batch(texts)


def test_gpt2_bpe_encodes_a_literal_endoftext_as_text(tokenizers_by_type):
    # OpenAI's encoder and Megatron-LM's GPT2Tokenizer have no special tokens in document text.
    gpt2 = tokenizers_by_type["GPT2BPETokenizer"]
    ids = gpt2.tokenize(f"a{EOD}b")
    assert gpt2.eod not in ids and gpt2.detokenize(ids) == f"a{EOD}b"


def test_hf_directory_form_equals_file_form(bpe_dir, texts):
    from_dir = build_tokenizer("HuggingFaceTokenizer", str(bpe_dir))
    from_file = build_tokenizer("HuggingFaceTokenizer", str(bpe_dir / "tokenizer.json"))
    assert from_dir.tokenize_batch(texts) == from_file.tokenize_batch(texts)
    assert from_dir.eod == from_file.eod == from_file.vocab[EOD]


@pytest.mark.parametrize("config_name", ["tokenizer_config.json", "special_tokens_map.json"])
@pytest.mark.parametrize("as_dict", [False, True])
def test_hf_eod_is_the_configured_eos_token(tmp_path, bpe_dir, config_name, as_dict):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    eos = {"content": CUSTOM_EOS, "special": True} if as_dict else CUSTOM_EOS
    (tmp_path / config_name).write_text(json.dumps({"eos_token": eos, "pad_token": None}))
    tokenizer = build_tokenizer("HuggingFaceTokenizer", str(tmp_path))
    assert tokenizer.eod == tokenizer.vocab[CUSTOM_EOS] != tokenizer.vocab[EOD]
    assert tokenizer.pad == tokenizer.eod
    assert pickle.loads(pickle.dumps(tokenizer)).eod == tokenizer.eod


def test_hf_tokenize_leaves_out_the_post_processor_special_tokens(tmp_path, bpe_dir, texts):
    # Megatron appends eod itself; a template that adds BOS/EOS must not put them in documents too.
    from tokenizers import processors

    plain = build_tokenizer("HuggingFaceTokenizer", str(bpe_dir))
    templated = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    templated.post_processor = processors.TemplateProcessing(
        single=f"{CUSTOM_EOS} $A {EOD}",
        special_tokens=[(CUSTOM_EOS, plain.vocab[CUSTOM_EOS]), (EOD, plain.eod)],
    )
    templated.save(str(tmp_path / "tokenizer.json"))
    tokenizer = build_tokenizer("HuggingFaceTokenizer", str(tmp_path))
    assert templated.encode("x").ids[0] == plain.vocab[CUSTOM_EOS]
    assert tokenizer.tokenize_batch(texts) == plain.tokenize_batch(texts)
    assert tokenizer.tokenize(texts[0]) == plain.tokenize(texts[0])


def test_hf_configured_eos_missing_from_vocabulary_names_the_config(tmp_path, bpe_dir):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</nope>"}))
    with pytest.raises(MegatronSotaError, match=r"tokenizer_config\.json.*</nope>"):
        build_tokenizer("HuggingFaceTokenizer", str(tmp_path))


def test_hf_without_any_eos_candidate_names_the_file(tmp_path):
    path = tmp_path / "no_eos.json"
    _byte_level_bpe(300, []).save(str(path))
    with pytest.raises(MegatronSotaError, match=r"no_eos\.json.*<\|endoftext\|>"):
        build_tokenizer("HuggingFaceTokenizer", str(path))


def test_tiktokenizer_matches_megatron_layout(tokenizers_by_type, tiktoken_vocab, bpe_ranks, texts):
    tokenizer = tokenizers_by_type["TikTokenizer"]
    # megatron-core: specials <unk>, <s>, </s>, ... take ids 0..999; eod is </s>; ranks shift by 1000.
    assert (tokenizer.eod, tokenizer.bos, tokenizer.pad) == (2, 1, 4)
    assert tokenizer.vocab["</s>"] == 2
    assert tokenizer.vocab_size == 1000 + len(json.loads(tiktoken_vocab.read_text()))
    pattern_v2 = tokenizer._library.tokenizer._pat_str
    ranks = {token: rank - 1000 for token, rank in tokenizer._library.token2id.items()}
    assert set(ranks) == set(bpe_ranks)
    reference = tiktoken.Encoding(
        "reference", pat_str=pattern_v2, mergeable_ranks=ranks, special_tokens={}
    )
    assert tokenizer.tokenize_batch(texts) == [
        [i + 1000 for i in ids] for ids in reference.encode_ordinary_batch(texts)
    ]
    ids = tokenizer.tokenize("a</s>b")
    assert tokenizer.eod not in ids and tokenizer.detokenize(ids) == "a</s>b"


def test_tiktokenizer_vocab_size_beyond_the_file_names_it(tiktoken_vocab):
    with pytest.raises(MegatronSotaError, match=r"vocab_size.*vocab\.json.*131072"):
        build_tokenizer("TikTokenizer", str(tiktoken_vocab))


def test_tiktokenizer_smaller_vocab_size_keeps_the_first_ranks(tiktoken_vocab):
    tokenizer = build_tokenizer("TikTokenizer", str(tiktoken_vocab), 1000 + 300)
    assert tokenizer.vocab_size == 1300
    assert max(tokenizer.tokenize(NON_ASCII + "def function(argument):")) < 1300


@pytest.mark.parametrize(
    "tokenizer_type, kwargs",
    [
        ("SentencePieceTokenizer", {"model_path": "missing.model"}),
        ("GPTSentencePieceTokenizer", {"model_path": "missing.model"}),
        ("HuggingFaceTokenizer", {"model_path": "missing.json"}),
        ("TikTokenizer", {"model_path": "missing.json"}),
        ("GPT2BPETokenizer", {"vocab_file": "missing.json", "merge_file": "merges.txt"}),
        ("GPT2BPETokenizer", {"vocab_file": "vocab.json", "merge_file": "missing.txt"}),
    ],
)
def test_missing_file_names_the_file(bpe_dir, tokenizer_type, kwargs):
    kwargs = {key: str(bpe_dir / value) for key, value in kwargs.items()}
    name = next(os.path.basename(value) for value in kwargs.values() if "missing" in value)
    with pytest.raises(MegatronSotaError, match=name):
        build_tokenizer(tokenizer_type, **kwargs)


@pytest.mark.parametrize(
    "tokenizer_type, kwargs, named",
    [
        ("HuggingFaceTokenizer", {"model_path": "vocab.json"}, "vocab.json"),
        ("HuggingFaceTokenizer", {"model_path": "spm.model"}, "spm.model"),
        ("SentencePieceTokenizer", {"model_path": "tokenizer.json"}, "tokenizer.json"),
        ("TikTokenizer", {"model_path": "tokenizer.json"}, "tokenizer.json"),
        ("TikTokenizer", {"model_path": "merges.txt"}, "merges.txt"),
        (
            "GPT2BPETokenizer",
            {"vocab_file": "tokenizer.json", "merge_file": "merges.txt"},
            "tokenizer.json",
        ),
        (
            "GPT2BPETokenizer",
            {"vocab_file": "vocab.json", "merge_file": "vocab.json"},
            "vocab.json",
        ),
    ],
)
def test_file_of_the_wrong_kind_names_the_file(bpe_dir, spm_model, tokenizer_type, kwargs, named):
    kwargs = {
        key: str(spm_model if value == "spm.model" else bpe_dir / value)
        for key, value in kwargs.items()
    }
    with pytest.raises(MegatronSotaError, match=named.replace(".", r"\.")):
        build_tokenizer(tokenizer_type, **kwargs)


def test_tiktoken_vocab_with_a_bad_entry_names_the_entry(tmp_path, tiktoken_vocab):
    entries = json.loads(tiktoken_vocab.read_text())
    entries[300]["rank"] = 7
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(MegatronSotaError, match=r"bad\.json.*entry 300"):
        build_tokenizer("TikTokenizer", str(path), 1000 + len(entries))


def test_gpt2_bpe_without_merge_file_names_the_flag(bpe_dir):
    with pytest.raises(MegatronSotaError, match="merge_file.*GPT2BPETokenizer"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=str(bpe_dir / "vocab.json"))


def test_hf_directory_without_tokenizer_json_lists_what_it_found(bpe_dir, tmp_path):
    (tmp_path / "vocab.json").write_bytes((bpe_dir / "vocab.json").read_bytes())
    with pytest.raises(MegatronSotaError, match=r"tokenizer\.json.*GPT2BPETokenizer.*vocab\.json"):
        build_tokenizer("HuggingFaceTokenizer", str(tmp_path))


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(
        MegatronSotaError, match="HuggingFaceTokenizer.*TikTokenizer.*found 'BertWordPieceCase'"
    ):
        build_tokenizer("BertWordPieceCase", "x")
