"""Specification of the built-in sentence splitter used by --split-sentences."""

from __future__ import annotations

from megatron_sota.data.sentence_split import split_sentences

TEXT = 'Dr. Smith went home. He said "Hi!" Then left.\n\nA new paragraph? Yes. J. R. Tolkien wrote it.'


def test_sentences_end_at_terminal_punctuation_but_not_after_abbreviations_or_initials():
    assert split_sentences(TEXT) == [
        "Dr. Smith went home.",
        'He said "Hi!"',
        "Then left.",
        "A new paragraph?",
        "Yes.",
        "J. R. Tolkien wrote it.",
    ]


def test_keep_newlines_keeps_the_whitespace_so_the_text_is_rebuilt_exactly():
    sentences = split_sentences(TEXT, keep_newlines=True)
    assert "".join(sentences) == TEXT
    assert sentences[2] == "Then left.\n\n"


def test_a_lowercase_continuation_is_not_a_new_sentence():
    assert split_sentences("It costs 3.5 dollars. e.g. this one.") == ["It costs 3.5 dollars. e.g. this one."]


def test_blank_text_has_no_sentences():
    assert split_sentences("   \n") == []
    assert split_sentences("") == []
