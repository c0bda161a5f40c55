"""Tokenizer export: transformers' AutoTokenizer on the exported directory gives the ids training saw.

Tokenizers are trained here on a few standard-library sources (seconds); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import sysconfig

import pytest
import sentencepiece
from tokenizers import Tokenizer, processors

from megatron_sota.conversion.tokenizer_export import special_token_ids, write_hf_tokenizer
from megatron_sota.data.byte_level_bpe_training import train_byte_level_bpe
from megatron_sota.data.sentencepiece_training import train_sentencepiece
from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.errors import MegatronSotaError

transformers = pytest.importorskip("transformers")

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
TRAIN_FILES = ("json/decoder.py", "json/encoder.py", "textwrap.py", "glob.py", "fnmatch.py", "heapq.py")
HELD_OUT_FILES = ("shlex.py", "colorsys.py", "string.py", "tokenize.py", "difflib.py", "calendar.py")
CHAT = ["<|user|>", "<|assistant|>"]
EDGE_TEXTS = [
    "", " ", "  ", "   x", " leading space", "trailing space ", "multiple    spaces   here", " " * 37,
    "\t\tdef f():\n\t\treturn 1\n", "\n", "\n\n\nfoo", "\r\nwindows\r\n", "def  f( x ):\n    return x  # c\n",
    "emoji 🎉🚀 CJK 世界 你好", "é\u0301 naïve café — 日本語", "NUL\x00byte", "\u3000ideographic space",
    "\x0c\x0b\x1c", "\ufeffBOM", "zero\u200bwidth", "ﬁ ligature ① ＡＢＣ", "▁literal metaspace ▁▁",
    "<s>html strike</s> <unk> <pad> <|endoftext|>", "<|user|>hi<|assistant|>there", " <|user|> x",
]
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def _read(name: str) -> str:
    return (STDLIB / name).read_text(encoding="utf-8")


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Short texts mixing whitespace, code words, unseen characters and special-token spellings."""
    rng = random.Random(seed)
    parts = ["a", "Z", "7", "_", "(", " ", "  ", "\t", "\n", "\r\n", "\u3000", "é", "世", "🎉", "<s>", "</s>",
             "<|user|>", "▁", "def", "self", "<0x41>", "<unk>", "<|endoftext|>", "ﬁ"]
    return ["".join(rng.choice(parts) for _ in range(rng.randrange(1, 40))) for _ in range(count)]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [_read(name) for name in HELD_OUT_FILES] + EDGE_TEXTS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": _read(n)}) + "\n" for n in TRAIN_FILES), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def spm_models(corpus, tmp_path_factory) -> dict[str, str]:
    """Our trainer's BPE and unigram, and a Llama-style model (dummy prefix) trained directly."""
    root = tmp_path_factory.mktemp("spm")
    models = {
        model_type: train_sentencepiece(
            [corpus], str(root / model_type), vocab_size=1200, model_type=model_type,
            special_tokens=CHAT, quiet=True,
        ).model_path
        for model_type in ("bpe", "unigram")
    }
    lines = [line for name in TRAIN_FILES for line in _read(name).splitlines() if line]
    sentencepiece.SentencePieceTrainer.Train(
        sentence_iterator=iter(lines), model_prefix=str(root / "llama"), vocab_size=1000,
        model_type="bpe", byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", user_defined_symbols=CHAT, minloglevel=2,
    )
    models["llama"] = str(root / "llama.model")
    return models


@pytest.fixture(scope="module")
def hf_dir(corpus, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("hf") / "tok"
    train_byte_level_bpe([corpus], str(out), vocab_size=1200, special_tokens=CHAT, quiet=True)
    return out


def _export(out: pathlib.Path, tokenizer_type: str, model_path: str | None = None, **files):
    """Export into `out` beside a Llama config.json, as a real export directory has, and load it."""
    written = write_hf_tokenizer(tokenizer_type, model_path, str(out), **files)
    assert sorted(written) == sorted(os.listdir(out))
    transformers.LlamaConfig(
        vocab_size=4096, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1
    ).save_pretrained(out)
    return transformers.AutoTokenizer.from_pretrained(out)


def _unigram_score(sp: sentencepiece.SentencePieceProcessor, ids: list[int]) -> float:
    return sum(sp.GetScore(i) for i in ids)


# --- SentencePiece ---------------------------------------------------------------------------------


def test_sentencepiece_bpe_export_encodes_and_decodes_exactly_like_sentencepiece(
    spm_models, texts, tmp_path
):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_models["bpe"])
    tok = _export(tmp_path, "SentencePieceTokenizer", spm_models["bpe"])
    samples = texts + _random_texts(500)
    expected = [sp.EncodeAsIds(text) for text in samples]
    assert [tok.encode(text) for text in samples] == expected
    assert tok(samples)["input_ids"] == expected
    assert sum(map(len, expected)) > 50_000
    assert [tok.decode(ids) for ids in expected] == [sp.DecodeIds(ids) for ids in expected]
    assert (tmp_path / "tokenizer.model").read_bytes() == pathlib.Path(spm_models["bpe"]).read_bytes()
    assert tok.encode("x") == sp.EncodeAsIds("x")  # no BOS, no EOS: documents were encoded without them


def test_exported_config_asks_every_transformers_version_for_tokenizer_json_without_bos_or_eos(
    spm_models, hf_dir, tmp_path
):
    write_hf_tokenizer("SentencePieceTokenizer", spm_models["bpe"], str(tmp_path / "spm"))
    write_hf_tokenizer("HuggingFaceTokenizer", str(hf_dir), str(tmp_path / "hf"))
    write_hf_tokenizer(
        "GPT2BPETokenizer", None, str(tmp_path / "gpt2"),
        vocab_file=str(hf_dir / "vocab.json"), merge_file=str(hf_dir / "merges.txt"),
    )
    for kind, split in (("spm", True), ("hf", False), ("gpt2", True)):
        config = json.loads((tmp_path / kind / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast", kind
        assert (config["add_bos_token"], config["add_eos_token"]) == (False, False), kind
        assert config["split_special_tokens"] is split, kind
        assert config["clean_up_tokenization_spaces"] is False, kind


def test_sentencepiece_bpe_export_forced_into_llama_tokenizer_gives_the_same_ids(
    spm_models, texts, tmp_path
):
    # LlamaTokenizer rebuilds its own pipeline from the files; the config's legacy/add_prefix_space and
    # add_bos_token must make that one agree too.
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_models["bpe"])
    write_hf_tokenizer("SentencePieceTokenizer", spm_models["bpe"], str(tmp_path))
    tok = transformers.LlamaTokenizer.from_pretrained(tmp_path)
    assert [tok.encode(text) for text in texts] == [sp.EncodeAsIds(text) for text in texts]


def test_gpt_sentencepiece_type_exports_the_same_files(spm_models, tmp_path):
    write_hf_tokenizer("SentencePieceTokenizer", spm_models["bpe"], str(tmp_path / "a"))
    write_hf_tokenizer("GPTSentencePieceTokenizer", spm_models["bpe"], str(tmp_path / "b"))
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_sentencepiece_special_tokens_single_ids_and_ids_for_the_config(spm_models, tmp_path):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_models["bpe"])
    tok = _export(tmp_path, "SentencePieceTokenizer", spm_models["bpe"])
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "<pad>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 3)
    # User-defined pieces are one id wherever they are; control pieces spelled in text are characters.
    ids = tok.encode("a<|user|>b</s>")
    assert ids == sp.EncodeAsIds("a<|user|>b</s>") and ids.count(4) == 1 and 2 not in ids
    tokenizer = build_tokenizer("SentencePieceTokenizer", spm_models["bpe"])
    assert special_token_ids(tokenizer) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
    assert tokenizer.eod == tok.eos_token_id


def test_sentencepiece_unigram_export_differs_only_between_equally_scored_segmentations(
    spm_models, texts, tmp_path
):
    # SentencePiece adds path scores in float32, tokenizers in float64: where two segmentations score
    # (nearly) the same, each may pick a different one. Everything else must be identical.
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_models["unigram"])
    tok = _export(tmp_path, "SentencePieceTokenizer", spm_models["unigram"])
    samples = texts + _random_texts(500)
    identical = 0
    for text in samples:
        ids, expected = tok.encode(text), sp.EncodeAsIds(text)
        if ids == expected:
            identical += 1
            continue
        assert sp.DecodeIds(ids) == sp.DecodeIds(expected), text[:80]
        scores = _unigram_score(sp, ids), _unigram_score(sp, expected)
        assert abs(scores[0] - scores[1]) <= 1e-6 * abs(scores[1]) + 1e-3, text[:80]
    assert identical >= 0.97 * len(samples)
    assert tok.encode("<s>x</s><pad>") == sp.EncodeAsIds("<s>x</s><pad>")  # control pieces never matched
    assert tok.decode(sp.EncodeAsIds(texts[0])) == texts[0]


def test_sentencepiece_dummy_prefix_model_differs_only_before_a_leading_user_defined_piece(
    spm_models, texts, tmp_path
):
    sp = sentencepiece.SentencePieceProcessor(model_file=spm_models["llama"])
    tok = _export(tmp_path, "SentencePieceTokenizer", spm_models["llama"])
    leading_piece = 0
    for text in texts + _random_texts(500):
        expected = sp.EncodeAsIds(text)
        if [sp.IdToPiece(i) for i in expected[:2]] in (["▁", "<|user|>"], ["▁", "<|assistant|>"]):
            leading_piece += 1
            assert tok.encode(text) == expected[1:]  # SentencePiece's lone dummy "▁" is missing
        else:
            assert tok.encode(text) == expected, text[:80]
        assert tok.decode(expected) == sp.DecodeIds(expected)
    assert leading_piece > 5


# --- HuggingFaceTokenizer ----------------------------------------------------------------------------


@pytest.mark.parametrize("template_file", ["tokenizer_config.json", "chat_template.jinja"])
def test_huggingface_export_encodes_like_our_tokenizer_and_keeps_the_chat_template(
    hf_dir, texts, tmp_path, template_file
):
    source = tmp_path / "source"
    shutil.copytree(hf_dir, source)
    if template_file == "tokenizer_config.json":
        config = json.loads((source / template_file).read_text())
        (source / template_file).write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    else:
        (source / template_file).write_text(TEMPLATE)
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    tok = _export(tmp_path / "out", "HuggingFaceTokenizer", str(source))
    samples = texts + _random_texts(500)
    expected = ours.tokenize_batch(samples)
    assert [tok.encode(text) for text in samples] == expected
    assert [tok.decode(ids) for ids in expected] == [ours.detokenize(ids) for ids in expected]
    assert tok.encode("<|user|>x<|endoftext|>") == ours.tokenize("<|user|>x<|endoftext|>")
    assert tok.chat_template == TEMPLATE
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|user|>hi"
    assert special_token_ids(ours) == {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    assert (tok.eos_token_id, tok.pad_token_id) == (ours.eod, ours.pad)


def test_huggingface_export_of_a_bare_tokenizer_json_names_eod_and_writes_no_chat_template(
    hf_dir, tmp_path
):
    source = tmp_path / "bare.json"
    shutil.copyfile(hf_dir / "tokenizer.json", source)
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    tok = _export(tmp_path / "out", "HuggingFaceTokenizer", str(source))
    assert tok.chat_template is None
    assert "chat_template" not in json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", ours.eod)
    assert special_token_ids(ours) == {"bos_token_id": None, "eos_token_id": ours.eod, "pad_token_id": None}


@pytest.mark.parametrize("with_byte_level", [True, False])
def test_huggingface_source_that_adds_bos_exports_a_tokenizer_that_does_not(
    hf_dir, texts, tmp_path, with_byte_level
):
    # Training encoded documents without the template's BOS, so the exported tokenizer must not add it,
    # even when the source's config asks for a Llama tokenizer class with add_bos_token.
    source = tmp_path / "source"
    source.mkdir()
    templated = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    template = processors.TemplateProcessing(single="<|user|> $A", special_tokens=[("<|user|>", 2)])
    byte_level = processors.ByteLevel(trim_offsets=False)
    templated.post_processor = processors.Sequence([byte_level, template]) if with_byte_level else template
    templated.save(str(source / "tokenizer.json"))
    (source / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "bos_token": "<|user|>",
         "eos_token": "<|endoftext|>", "auto_map": {"AutoTokenizer": ["x.Y", None]}, "add_prefix_space": True}
    ))
    assert templated.encode("x").ids[0] == 2
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    tok = _export(tmp_path / "out", "HuggingFaceTokenizer", str(source))
    assert [tok.encode(text) for text in texts] == ours.tokenize_batch(texts)
    post_processor = json.loads((tmp_path / "out" / "tokenizer.json").read_text())["post_processor"]
    if with_byte_level:  # offsets trimming is kept, the template goes
        assert [step["type"] for step in post_processor["processors"]] == ["ByteLevel"]
    else:
        assert post_processor is None
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["add_prefix_space"] is False and "auto_map" not in config  # as tokenizer.json has it
    assert special_token_ids(ours)["bos_token_id"] == 2


# --- GPT2BPETokenizer ----------------------------------------------------------------------------------


def test_gpt2_bpe_export_encodes_like_our_tokenizer(hf_dir, texts, tmp_path):
    files = {"vocab_file": str(hf_dir / "vocab.json"), "merge_file": str(hf_dir / "merges.txt")}
    ours = build_tokenizer("GPT2BPETokenizer", **files)
    tok = _export(tmp_path, "GPT2BPETokenizer", None, **files)
    samples = texts + _random_texts(500)
    expected = ours.tokenize_batch(samples)
    assert [tok.encode(text) for text in samples] == expected
    assert [tok.decode(ids) for ids in expected] == [ours.detokenize(ids) for ids in expected]
    # "<|endoftext|>" in a document is text to GPT-2's encoder: several ids, never eod.
    ids = tok.encode("a<|endoftext|>b")
    assert ids == ours.tokenize("a<|endoftext|>b") and ours.eod not in ids
    assert tok.eos_token_id == ours.eod
    config_ids = special_token_ids(ours)
    assert config_ids == {"bos_token_id": ours.eod, "eos_token_id": ours.eod, "pad_token_id": None}


# --- refusals, errors and the output directory ------------------------------------------------------


@pytest.mark.parametrize("tokenizer_type", ["TikTokenizer", "NullTokenizer"])
def test_tiktoken_and_null_tokenizers_are_refused_with_the_alternative_named(tokenizer_type, tmp_path):
    refused = rf"{tokenizer_type}: .*cannot be written .*--tokenizer-model"
    with pytest.raises(MegatronSotaError, match=refused):
        write_hf_tokenizer(tokenizer_type, None, str(tmp_path / "out"), vocab_size=100)
    assert not (tmp_path / "out").exists()


def test_null_tokenizer_ids_for_the_config(tmp_path):
    ids = special_token_ids(build_tokenizer("NullTokenizer", vocab_size=100))
    assert ids == {"bos_token_id": None, "eos_token_id": 99, "pad_token_id": None}


@pytest.mark.parametrize(
    "tokenizer_type, paths, named",
    [
        ("SentencePieceTokenizer", {"model_path": "missing.model"}, "missing.model"),
        ("HuggingFaceTokenizer", {"model_path": "missing_dir"}, "missing_dir"),
        ("GPT2BPETokenizer", {"vocab_file": "vocab.json", "merge_file": "missing.txt"}, "missing.txt"),
    ],
)
def test_missing_input_is_named(tokenizer_type, paths, named, hf_dir, tmp_path):
    paths = {key: str(hf_dir / value) for key, value in paths.items()}
    model_path = paths.pop("model_path", None)
    with pytest.raises(MegatronSotaError, match=named.replace(".", r"\.")):
        write_hf_tokenizer(tokenizer_type, model_path, str(tmp_path / "out"), **paths)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_unreadable_sentencepiece_file_is_named(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(MegatronSotaError, match=r"bad\.model"):
        write_hf_tokenizer("SentencePieceTokenizer", str(bad), str(tmp_path / "out"))


def test_out_dir_that_is_a_file_is_named(spm_models, tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(MegatronSotaError, match=r"out': expected a directory, found a file"):
        write_hf_tokenizer("SentencePieceTokenizer", spm_models["bpe"], str(tmp_path / "out"))


def test_export_writes_only_inside_out_dir_and_replaces_an_earlier_export(spm_models, hf_dir, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    first = write_hf_tokenizer("SentencePieceTokenizer", spm_models["bpe"], str(out))
    assert "tokenizer.model" in first
    (out / "chat_template.jinja").write_text(TEMPLATE)  # as if an earlier export had carried one
    second = write_hf_tokenizer(
        "GPT2BPETokenizer", None, str(out),
        vocab_file=str(hf_dir / "vocab.json"), merge_file=str(hf_dir / "merges.txt"),
    )
    assert sorted(os.listdir(out)) == sorted([*second, "model.safetensors"])
    assert "tokenizer.model" not in second and "chat_template.jinja" not in second
    assert sorted(os.listdir(tmp_path)) == ["export"]
