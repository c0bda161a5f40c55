"""Shingle sets and MinHash signatures of a text, computed the way datatrove's MinHash dedup sees it.

The tests measure planted similarities with this; it must use datatrove's own functions, not re-implement them."""

from __future__ import annotations

from functools import lru_cache

from datatrove.utils.text import TextNormConfig, ngrams, simplify_text
from datatrove.utils.typeshelper import Languages
from datatrove.utils.word_tokenizers import load_word_tokenizer


@lru_cache(maxsize=None)
def word_tokenizer():
    return load_word_tokenizer(Languages.english)


def shingle_set(text: str, n_grams: int = 5) -> frozenset[str]:
    """The set of word n-grams MinhashDedupSignature hashes (before hashing), for English text."""
    words = word_tokenizer().word_tokenize(simplify_text(text, TextNormConfig()))
    return frozenset(" ".join(gram) for gram in ngrams(words, n_grams))


def shingle_jaccard(a: str, b: str, n_grams: int = 5) -> float:
    """Exact Jaccard similarity of the shingle sets of a and b (what MinHash estimates)."""
    sa, sb = shingle_set(a, n_grams), shingle_set(b, n_grams)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


@lru_cache(maxsize=None)
def _minhash_signer():
    import tempfile

    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    # datatrove's default MinhashConfig (5-grams, 14 buckets x 8 hashes, seed 1) is also the pipeline's default;
    # the output folder is required but never written to
    return MinhashDedupSignature(output_folder=tempfile.gettempdir(), config=MinhashConfig())


@lru_cache(maxsize=1024)
def minhash_buckets(text: str) -> tuple[tuple[int, ...], ...]:
    """The per-bucket MinHash signature datatrove computes for text at its default settings."""
    signer = _minhash_signer()
    return tuple(tuple(bucket) for bucket in signer.get_signature(signer.get_shingles(text)))


def minhash_match(a: str, b: str) -> bool:
    """Whether datatrove's default MinHash dedup pairs a and b (they agree on a whole bucket)."""
    return any(x == y for x, y in zip(minhash_buckets(a), minhash_buckets(b)))


