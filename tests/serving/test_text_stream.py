"""TextStream: what a stream sends adds up to the completion's text, with multi-byte characters arriving byte by byte
and stop strings split across tokens (the real SentencePiece tokenizer of the suite, byte fallback on)."""

from __future__ import annotations

import pytest

from megatron_sota.serving.text_stream import REPLACEMENT, TextStream

TEXT = "naïve café → 日本語 ✓ done; the end. ünïcödé again"


@pytest.fixture(scope="module")
def tokenizer(stdlib_shards):
    from megatron_sota.data.tokenizer import build_tokenizer

    return build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)


def _deltas(tokenizer, ids, stop=()):
    stream = TextStream(tokenizer, stop)
    deltas = [stream.add(i) for i in ids]
    deltas.append(stream.finish())
    return deltas, stream


def test_multibyte_characters_are_sent_whole_and_add_up_to_the_text(tokenizer):
    ids = tokenizer.tokenize(TEXT)
    pieces = [tokenizer.detokenize(ids[: n + 1]) for n in range(len(ids))]
    assert any(p.endswith(REPLACEMENT) for p in pieces)  # some prefixes end inside a character: the case under test
    deltas, stream = _deltas(tokenizer, ids)
    assert "".join(deltas) == stream.text == tokenizer.detokenize(ids) == TEXT
    assert not any(REPLACEMENT in d for d in deltas)


@pytest.mark.parametrize("stop", ["; the", "日本", "é a", "zzz"])
def test_stop_strings_split_across_tokens_end_the_text_before_them(tokenizer, stop):
    ids = tokenizer.tokenize(TEXT)
    deltas, stream = _deltas(tokenizer, ids, [stop, "never there"])
    expected = TEXT[: TEXT.index(stop)] if stop in TEXT else TEXT
    assert "".join(deltas) == stream.text == expected
    assert stream.stopped == (stop in TEXT)
    assert all(stop not in "".join(deltas[: n + 1]) for n in range(len(deltas)))  # no part of a stop string is ever sent


def test_held_back_start_of_a_stop_string_is_sent_when_it_turns_out_not_to_be_one(tokenizer):
    stream = TextStream(tokenizer, ["café!"])
    sent = "".join(stream.add(i) for i in tokenizer.tokenize("a café? yes"))
    assert not sent.endswith("caf")  # held back while it could still become "café!"
    assert sent + stream.finish() == "a café? yes" and not stream.stopped
