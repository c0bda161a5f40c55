"""Write the tokenizer a model was trained with as Hugging Face files that encode to the same ids.

Writes only fixed tokenizer file names inside out_dir; it must not touch weights or model configs.

The goal: `AutoTokenizer.from_pretrained(export_dir).encode(text)` (default add_special_tokens=True) equals
our tokenizer's ids. Every export names `tokenizer_class: PreTrainedTokenizerFast`, so transformers runs
tokenizer.json as written (LlamaTokenizer would rebuild its own pipeline), with add_bos_token and
add_eos_token false: training documents had no BOS and got eod appended by Megatron, not by the tokenizer.

SentencePiece (.model): tokenizer.model is copied, and tokenizer.json is built here from the model proto,
not left to transformers' conversion (which varies with its version and its `legacy`/`add_prefix_space`).
BPE becomes a `tokenizers` BPE with one merge per way to split each piece, ranked by the piece's score;
unigram a `tokenizers` Unigram with the same scores. `split_special_tokens: true` keeps "<s>", "</s>" in text
as characters, as SentencePiece does (so it would in a chat template that spells "</s>"); user-defined
pieces (--special-tokens) stay single ids. Measured with sentencepiece 0.2.3, tokenizers 0.23 and
transformers 5.24 on Python standard-library sources:
  - BPE (our trainer's default: no dummy prefix, identity normalization, byte fallback): identical ids on
    all 300 files (1.5M ids, vocab 8000) and all 137,350 lines, on 2,000 random strings of whitespace,
    unseen characters and special-token spellings, and decoding identical.
  - BPE models with a dummy prefix (Llama style), also with NFKC + remove_extra_whitespaces: identical,
    except a text that starts with a user-defined piece: SentencePiece puts a lone "▁" id before it, the
    export does not (a `tokenizers` normalizer cannot add it without changing the piece too).
  - unigram: NOT always identical. SentencePiece sums path scores in float32, tokenizers in float64, so
    where two segmentations score (nearly) the same they may pick differently: 307 of 137,350 lines (all
    exact ties in total score, e.g. the same whitespace pieces in another order) and 56 of 300 whole
    files, 228 of their 1.56M ids. Each such text still decodes to the same string.
  - decoding ids of text is identical; SentencePiece decodes control ids (</s>) to "" and <unk> to " ⁇ ",
    transformers prints the token unless skip_special_tokens=True.
  - char/word models, treat_whitespace_as_suffix and escape_whitespaces=false are refused.

HuggingFaceTokenizer: tokenizer.json is copied, minus post-processor steps that add special tokens (ours
encodes with add_special_tokens=False); tokenizer_config.json keeps the source's settings and chat_template
(chat_template.jinja is copied too), names our eod as eos_token, and leaves special tokens in text matched
as single ids, as ours matches them. GPT2BPETokenizer: vocab.json + merges.txt become the same byte-level
BPE in tokenizer.json, "<|endoftext|>" in text staying text. TikTokenizer and NullTokenizer are refused:
ship a tokenizer with --tokenizer-model instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import sentencepiece
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from megatron_sota.data.hf_tokenizer import (
    GPT2_EOD,
    GPT2BPETokenizer,
    HuggingFaceTokenizer,
    _configured_token,
    _read_json_object,
    _tokenizer_json_path,
    gpt2_byte_level,
)
from megatron_sota.data.tiktoken_tokenizer import TikTokenizer
from megatron_sota.data.tokenizer import (
    SentencePieceTokenizer,
    Tokenizer as AnyTokenizer,
    build_tokenizer,
)
from megatron_sota.errors import MegatronSotaError

OUTPUT_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
)
"""Every file an export may write; those a new export does not write are removed from out_dir."""
NOT_EXPORTABLE = ("TikTokenizer", "NullTokenizer")
# SentencePiece ModelProto enum values.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_UNIGRAM, _BPE = 1, 2
_NEVER_CHOSEN = -1e9
"""Unigram score for pieces SentencePiece never matches in text (control, byte): below any real path."""
# Keys that would make transformers load something other than the tokenizer.json we ship.
_DROPPED_HF_KEYS = ("auto_map", "tokenizer_file", "name_or_path", "added_tokens_decoder")
_ADDING_POST_PROCESSORS = ("TemplateProcessing", "BertProcessing", "RobertaProcessing")


def write_hf_tokenizer(
    tokenizer_type: str,
    model_path: str | None,
    out_dir: str,
    *,
    vocab_file: str | None = None,
    merge_file: str | None = None,
    vocab_size: int | None = None,
    chat_template: str | None = None,
) -> list[str]:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ tokenizer.model for
    SentencePiece, chat_template.jinja when the source has one) into out_dir; returns the file names.

    Arguments are build_tokenizer's (--tokenizer-type, --tokenizer-model, --vocab-file, --merge-file);
    `chat_template` (Jinja text: the template a model was post-trained with) goes into tokenizer_config.json
    in place of the source's own, so transformers' apply_chat_template renders what training rendered.
    """
    if tokenizer_type in NOT_EXPORTABLE:
        raise MegatronSotaError(
            f"tokenizer type {tokenizer_type}: expected a SentencePiece, HuggingFace or GPT-2 BPE "
            f"tokenizer to export, found one that cannot be written as Hugging Face files automatically; "
            f"pass the tokenizer to ship separately with --tokenizer-model (a .model file or a "
            f"tokenizer.json directory)"
        )
    tokenizer = build_tokenizer(
        tokenizer_type, model_path, vocab_size, vocab_file=vocab_file, merge_file=merge_file
    )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise MegatronSotaError(f"tokenizer output {out_dir!r}: expected a directory, found a file")
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(tokenizer, SentencePieceTokenizer):
        files = _write_sentencepiece(tokenizer, out_dir)
    elif isinstance(tokenizer, HuggingFaceTokenizer):
        files = _write_huggingface(tokenizer, out_dir)
    else:
        files = _write_gpt2(tokenizer, str(vocab_file), str(merge_file), out_dir)
    if chat_template is not None:
        _set_chat_template(out_dir, chat_template)
        files = [name for name in files if name != "chat_template.jinja"]  # it would win over the config's
    # A stale file from an earlier export (a chat template, a tokenizer.model) would be loaded with these.
    for name in OUTPUT_FILES:
        if name not in files and os.path.isfile(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    return files


def special_token_ids(tokenizer: AnyTokenizer) -> dict[str, int | None]:
    """bos/eos/pad ids for config.json and generation_config.json: eos is our eod, None where none exists."""
    bos: int | None = None
    pad: int | None = None
    if isinstance(tokenizer, SentencePieceTokenizer):
        # Our tokenizer's pad falls back to eod; the config should say the model has none.
        processor = sentencepiece.SentencePieceProcessor(model_file=tokenizer.model_path)
        bos, pad = _id_or_none(processor.bos_id()), _id_or_none(processor.pad_id())
    elif isinstance(tokenizer, HuggingFaceTokenizer):
        directory = os.path.dirname(_tokenizer_json_path(tokenizer.model_path))
        bos, pad = (_configured_id(tokenizer, directory, key) for key in ("bos_token", "pad_token"))
    elif isinstance(tokenizer, GPT2BPETokenizer):
        bos = tokenizer.eod  # GPT-2's convention: <|endoftext|> is both bos and eos
    elif isinstance(tokenizer, TikTokenizer):
        bos, pad = tokenizer.bos, tokenizer.pad
    return {"bos_token_id": bos, "eos_token_id": tokenizer.eod, "pad_token_id": pad}


# --- SentencePiece ------------------------------------------------------------------------------


def _write_sentencepiece(tokenizer: SentencePieceTokenizer, out_dir: str) -> list[str]:
    path = tokenizer.model_path
    proto = _load_proto(path)
    backend = _sentencepiece_backend(proto, path)
    spec = proto.trainer_spec
    piece = {i: proto.pieces[i].piece for i in range(len(proto.pieces))}
    config = {
        **_common_config(split_special_tokens=True),
        "bos_token": piece.get(spec.bos_id),
        "eos_token": piece[tokenizer.eod],
        "unk_token": piece.get(spec.unk_id),
        "pad_token": piece.get(spec.pad_id),
        # Only read if someone forces LlamaTokenizer: then its dummy prefix must be the model's.
        "legacy": False,
        "add_prefix_space": proto.normalizer_spec.add_dummy_prefix,
    }
    _copy(path, os.path.join(out_dir, "tokenizer.model"))
    return ["tokenizer.model", *_write_files(out_dir, backend.to_str(pretty=True), config)]


def _load_proto(path: str) -> Any:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as err:  # the generated module needs protobuf
        raise MegatronSotaError(
            f"tokenizer model file {path!r}: exporting a SentencePiece model needs the protobuf package "
            f"(pip install protobuf), found it missing ({err})"
        ) from err
    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())  # build_tokenizer has already loaded this file
    return proto


def _sentencepiece_backend(proto: Any, path: str) -> Tokenizer:
    """A `tokenizers` pipeline that encodes like SentencePieceProcessor.EncodeAsIds (see module docstring)."""
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    problems = [
        f"model_type {spec.model_type}" if spec.model_type not in (_BPE, _UNIGRAM) else "",
        "treat_whitespace_as_suffix" if spec.treat_whitespace_as_suffix else "",
        "escape_whitespaces=false" if not norm.escape_whitespaces else "",
    ]
    if any(problems):
        raise MegatronSotaError(
            f"tokenizer model file {path!r}: expected a BPE (2) or unigram (1) model that writes spaces "
            f"as '▁' before words, found {', '.join(p for p in problems if p)}; pass a tokenizer.json "
            f"to ship with --tokenizer-model"
        )
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    unk = pieces[spec.unk_id][0]
    if spec.model_type == _BPE:
        rank = {text: (-score, i) for i, (text, score, kind) in enumerate(pieces) if kind == _NORMAL}
        # SentencePiece merges the adjacent pair whose union is the best-scoring piece, however the piece
        # splits; tokenizers merges by rank, so every split of a piece gets a merge at the piece's rank.
        merges = sorted(
            (rank[text], text[:cut], text[cut:])
            for text in rank
            for cut in range(1, len(text))
            if text[:cut] in rank and text[cut:] in rank
        )
        model: Any = models.BPE(
            vocab={text: i for i, (text, _, _) in enumerate(pieces)},
            merges=[(left, right) for _, left, right in merges],
            unk_token=unk,
            fuse_unk=True,  # SentencePiece also joins a run of unknown characters into one <unk>
            byte_fallback=spec.byte_fallback,
        )
    else:
        # tokenizers' Viterbi matches every vocabulary entry in text; SentencePiece never matches control,
        # unknown, byte or unused pieces, so those get a score no segmentation chooses.
        model = models.Unigram(
            [
                (text, score if kind in (_NORMAL, _USER_DEFINED) else _NEVER_CHOSEN)
                for text, score, kind in pieces
            ],
            spec.unk_id,
            spec.byte_fallback,
        )
    backend = Tokenizer(model)
    steps: list[Any] = []
    if norm.precompiled_charsmap:  # NFKC and other rule-based normalizations, compiled into the model
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if norm.remove_extra_whitespaces:
        # \A and \z: onig's ^ and $ would also match around newlines.
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    user_defined = [text for text, _, kind in pieces if kind == _USER_DEFINED]
    if norm.add_dummy_prefix:
        # One "▁" in front of the whole normalized text, as SentencePiece adds it (Metaspace's prefix is
        # skipped after stripped spaces and before a "▁"). Not in front of a user-defined piece: added
        # tokens' text is normalized too, and the piece must stay itself (see the module docstring).
        keep = "".join(f"(?!{re.escape(text)})" for text in user_defined)
        steps.append(normalizers.Replace(Regex(rf"\A(?=[\s\S]){keep}"), "▁"))
    backend.normalizer = normalizers.Sequence(steps) if steps else None
    backend.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="never", split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces:
        steps.append(decoders.Strip(" ", 1, 0))  # SentencePiece drops the leading space it added
    backend.decoder = decoders.Sequence(steps)
    # User-defined pieces are whole wherever they occur, as in SentencePiece (not special: they must still
    # match under split_special_tokens); control pieces are the special tokens transformers names.
    backend.add_tokens([AddedToken(text, special=False, normalized=True) for text in user_defined])
    control = [text for text, _, kind in pieces if kind in (_CONTROL, _UNKNOWN)]
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in control])
    return backend


def _id_or_none(piece_id: int) -> int | None:
    return piece_id if piece_id >= 0 else None


# --- HF tokenizer.json and GPT-2 BPE -----------------------------------------------------------------


def _write_huggingface(tokenizer: HuggingFaceTokenizer, out_dir: str) -> list[str]:
    json_path = _tokenizer_json_path(tokenizer.model_path)
    directory = os.path.dirname(json_path)
    backend = _read_json_object(json_path)
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # config wins, as in hf_tokenizer.py
        source = os.path.join(directory, name)
        if os.path.isfile(source):
            config.update(_read_json_object(source))
    for key in _DROPPED_HF_KEYS:
        config.pop(key, None)
    config.update(_common_config(split_special_tokens=False))  # ours matches added tokens in text
    config["eos_token"] = tokenizer.inv_vocab[tokenizer.eod]
    # transformers 4.x rewrites a top-level ByteLevel pre-tokenizer to the config's add_prefix_space.
    pre_tokenizer = backend.get("pre_tokenizer") or {}
    if "add_prefix_space" in pre_tokenizer:
        config["add_prefix_space"] = pre_tokenizer["add_prefix_space"]
    else:
        config.pop("add_prefix_space", None)
    post_processor = _without_added_tokens(backend.get("post_processor"))
    if post_processor != backend.get("post_processor"):
        backend["post_processor"] = post_processor
        text = json.dumps(backend, indent=2, ensure_ascii=False)
    else:
        with open(json_path, encoding="utf-8") as f:  # unchanged: keep the file byte for byte
            text = f.read()
    files = _write_files(out_dir, text, config)
    template = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(template):  # where recent transformers versions save the chat template
        _copy(template, os.path.join(out_dir, "chat_template.jinja"))
        files.append("chat_template.jinja")
    return files


def _without_added_tokens(post_processor: Any) -> Any:
    """The post-processor minus steps that add BOS/EOS/CLS (ByteLevel offset trimming stays)."""
    if not isinstance(post_processor, dict):
        return post_processor
    if post_processor.get("type") in _ADDING_POST_PROCESSORS:
        return None
    if post_processor.get("type") == "Sequence":
        steps = post_processor.get("processors", [])
        kept = [step for step in steps if step.get("type") not in _ADDING_POST_PROCESSORS]
        return {**post_processor, "processors": kept} if kept else None
    return post_processor


def _configured_id(tokenizer: HuggingFaceTokenizer, directory: str, key: str) -> int | None:
    name, _ = _configured_token(directory, key)  # the same lookup our tokenizer uses for eos and pad
    return tokenizer.vocab.get(name) if name else None


def _write_gpt2(tokenizer: GPT2BPETokenizer, vocab_file: str, merge_file: str, out_dir: str) -> list[str]:
    backend = gpt2_byte_level(models.BPE.from_file(vocab_file, merge_file))  # GPT2BPETokenizer's pipeline
    backend.add_special_tokens([AddedToken(GPT2_EOD, special=True, normalized=False)])
    config = {
        **_common_config(split_special_tokens=True),  # "<|endoftext|>" in documents is text
        "bos_token": GPT2_EOD,
        "eos_token": tokenizer.inv_vocab[tokenizer.eod],
        "add_prefix_space": False,
    }
    return _write_files(out_dir, backend.to_str(pretty=True), config)


# --- files -----------------------------------------------------------------------------------------


def _common_config(split_special_tokens: bool) -> dict[str, Any]:
    return {
        # Loads tokenizer.json as written; model classes (LlamaTokenizer) rebuild their own pipeline.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # would rewrite " ." in decoded code
        "split_special_tokens": split_special_tokens,
    }


def _write_files(out_dir: str, tokenizer_json: str, config: dict[str, Any]) -> list[str]:
    config = {key: value for key, value in config.items() if value is not None}
    special_map = {
        key: config[key]
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
        if key in config
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer_json)
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        _write_json(os.path.join(out_dir, name), content)
    return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def _set_chat_template(out_dir: str, chat_template: str) -> None:
    path = os.path.join(out_dir, "tokenizer_config.json")
    _write_json(path, {**_read_json_object(path), "chat_template": chat_template})


def _write_json(path: str, content: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _copy(source: str, target: str) -> None:
    if os.path.exists(target) and os.path.samefile(source, target):
        return
    try:
        shutil.copyfile(source, target)
    except OSError as err:
        raise MegatronSotaError(
            f"tokenizer file {source!r}: expected a readable file to copy to {target!r}, found {err}"
        ) from err
