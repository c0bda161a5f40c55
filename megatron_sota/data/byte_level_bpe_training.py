"""Train a GPT-2 style byte-level BPE tokenizer with Hugging Face `tokenizers`, written as the files
Megatron (HuggingFaceTokenizer, GPT2BPETokenizer) and transformers load; it must not tokenize datasets.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from megatron_sota.data.hf_tokenizer import GPT2_EOD, gpt2_byte_level
from megatron_sota.data.tokenizer_corpus import (
    TrainedTokenizer,
    TrainingLines,
    check_special_tokens,
    check_vocab_size,
)
from megatron_sota.errors import MegatronSotaError

EOD_TOKEN = GPT2_EOD
PAD_TOKEN = "<|pad|>"
BUILT_IN_TOKENS = (EOD_TOKEN, PAD_TOKEN)
"""Ids 0 and 1; user --special-tokens follow, then the 256 byte symbols, then merges."""
NO_MAX_LENGTH = int(1e30)
"""What transformers writes as model_max_length when a tokenizer has no length limit."""
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def build_untrained(special_tokens: Sequence[str] = ()) -> tuple[Tokenizer, list[str]]:
    """An empty byte-level BPE tokenizer (GPT-2 regex, no prefix space) and its special tokens."""
    tokenizer = gpt2_byte_level(models.BPE())
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer, [*BUILT_IN_TOKENS, *special_tokens]


def train_byte_level_bpe(
    inputs: Sequence[str],
    output_dir: str,
    vocab_size: int = 32_000,
    json_key: str = "text",
    special_tokens: Sequence[str] = (),
    input_sentence_size: int = 200_000,
    seed: int = 1234,
    model_max_length: int = NO_MAX_LENGTH,
    quiet: bool = False,
) -> TrainedTokenizer:
    """Train into `output_dir`: tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)
    and GPT-2 style vocab.json + merges.txt. Ids: <|endoftext|>=0 (EOD), <|pad|>=1, then
    special_tokens, then all 256 bytes (so any UTF-8 text round-trips), then merges.

    `input_sentence_size` lines are sampled with `seed` (0 = stream every line).
    """
    specials = check_special_tokens(special_tokens, BUILT_IN_TOKENS)
    reserved = len(BUILT_IN_TOKENS) + len(specials) + 256
    check_vocab_size(
        vocab_size,
        reserved,
        "huggingface byte-level BPE",
        f"{len(BUILT_IN_TOKENS)} built-in + {len(specials)} --special-tokens + 256 byte symbols",
    )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise MegatronSotaError(
            f"--model-prefix {output_dir!r}: expected a directory for huggingface (it will hold "
            f"{', '.join(FILES)}), found a file"
        )
    start = time.perf_counter()
    # Lines are cut where the pre-tokenizer ends a word anyway, and BPE never merges across
    # words: all lines teach exactly what the whole documents would, and lines can be sampled.
    lines = TrainingLines(
        inputs,
        json_key,
        sample_size=input_sentence_size,
        seed=seed,
        keep_line_breaks=True,
        progress=not quiet,
    )
    tokenizer, all_specials = build_untrained(specials)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=all_specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=not quiet,
    )
    try:
        tokenizer.train_from_iterator(iter(lines), trainer, length=lines.known_length)
    except Exception as err:  # tokenizers reports an iterator's exception as its own
        if lines.error is not None:
            raise lines.error from None
        raise MegatronSotaError(
            f"byte-level BPE training on {lines.describe()} (--json-key {json_key!r}, "
            f"--vocab-size {vocab_size}) failed: {err}"
        ) from err
    counts = lines.finish()
    learned = tokenizer.get_vocab_size()
    if learned < vocab_size:
        # The trainer stops quietly when no pair is left to merge; a model config sized for
        # vocab_size would then carry ids no token ever uses.
        raise MegatronSotaError(
            f"--vocab-size {vocab_size}: expected a corpus with enough distinct byte pairs to "
            f"learn {vocab_size - reserved} merges, found {learned - reserved} in "
            f"{lines.describe()}; use --vocab-size <= {learned}, or train on more text"
        )
    files = _write(tokenizer, output_dir, specials, model_max_length)
    return TrainedTokenizer(
        library="huggingface",
        model_path=output_dir,
        files=files,
        vocab_size=learned,
        preprocess_flags=(
            ("--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", output_dir),
            (
                "--tokenizer-type",
                "GPT2BPETokenizer",
                "--vocab-file",
                os.path.join(output_dir, "vocab.json"),
                "--merge-file",
                os.path.join(output_dir, "merges.txt"),
            ),
        ),
        corpus=counts,
        seconds=time.perf_counter() - start,
    )


def _write(
    tokenizer: Tokenizer, output_dir: str, specials: list[str], model_max_length: int
) -> tuple[str, ...]:
    os.makedirs(output_dir, exist_ok=True)
    tokenizer.save(os.path.join(output_dir, "tokenizer.json"))
    tokenizer.model.save(output_dir)  # vocab.json + merges.txt, GPT-2's format
    # bos = eos = <|endoftext|> as in GPT-2; clean_up_tokenization_spaces would rewrite " ." in
    # decoded code, so it is off.
    special_map = {"bos_token": EOD_TOKEN, "eos_token": EOD_TOKEN, "pad_token": PAD_TOKEN}
    if specials:
        special_map["additional_special_tokens"] = specials  # type: ignore[assignment]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        **special_map,
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return tuple(os.path.join(output_dir, name) for name in FILES)
