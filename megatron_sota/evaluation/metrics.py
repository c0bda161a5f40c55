"""Metrics and their standard errors, computed as lm-evaluation-harness does so numbers are comparable.

- acc: 1 when the choice with the highest summed log-likelihood is the gold one.
- acc_norm: the same after dividing each choice's log-likelihood by the choice's length in characters,
  without the delimiter that joins it to the context (lm-eval's `acc_norm`: len(choice), not
  len(" " + choice)), which removes the bias of summed log-likelihoods towards short choices.
- acc_bytes: the same with the choice's UTF-8 byte length (lm-eval's `acc_bytes`), which does not
  depend on how many bytes a script spends per character. Ties go to the first choice (numpy.argmax).
- exact_match: mean of 0/1 per item (see answer_extraction).
- pass@k: from n sampled answers of which c are right, the unbiased estimator of the chance that at least one
  of k drawn without replacement is right, 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large
  Language Models Trained on Code", the HumanEval paper), averaged over items.
- perplexity = exp(-sum(ll) / sum(tokens)) and bits_per_byte = -sum(ll) / (sum(bytes) * ln 2), pooled
  over all documents (token-weighted, like lm-eval's weighted_perplexity), not a mean of per-document values.
Standard errors: for means, sample std (ddof=1) / sqrt(n), lm-eval's mean_stderr. For the pooled
ratios, the delta method over documents (see `ratio_stderr`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample std / sqrt(n)); the standard error is None for fewer than 2 values."""
    array = numpy.asarray(values, dtype=numpy.float64)
    if array.size == 0:
        raise ValueError("mean_stderr of no values")
    mean = float(array.mean())
    if array.size < 2:
        return mean, None
    return mean, float(array.std(ddof=1) / math.sqrt(array.size))


def multiple_choice_scores(
    loglikelihoods: Sequence[Sequence[float]],
    choices: Sequence[Sequence[str]],
    gold: Sequence[int],
) -> dict[str, list[float]]:
    """Per item 1.0/0.0 under "acc", "acc_norm" and "acc_bytes"; inputs are per item, per choice (same shapes).

    `choices` are the texts the lengths are taken of: each continuation without its leading delimiter.
    """
    if not len(loglikelihoods) == len(choices) == len(gold):
        raise ValueError(f"{len(loglikelihoods)} log-likelihood lists, {len(choices)} choice lists, {len(gold)} gold indices")
    outcomes: dict[str, list[float]] = {"acc": [], "acc_norm": [], "acc_bytes": []}
    for i, (lls, texts, answer) in enumerate(zip(loglikelihoods, choices, gold)):
        if len(lls) != len(texts) or not lls:
            raise ValueError(f"item {i}: {len(lls)} log-likelihoods but {len(texts)} choices")
        if not 0 <= answer < len(lls):
            raise ValueError(f"item {i}: gold index {answer} outside 0..{len(lls) - 1}")
        if not all(texts):
            raise ValueError(f"item {i}: an empty choice (acc_norm divides by its length)")
        scores = numpy.asarray(lls, dtype=numpy.float64)
        characters = numpy.asarray([len(t) for t in texts], dtype=numpy.float64)
        size = numpy.asarray([len(t.encode("utf-8")) for t in texts], dtype=numpy.float64)
        for metric, values in (("acc", scores), ("acc_norm", scores / characters), ("acc_bytes", scores / size)):
            outcomes[metric].append(1.0 if int(numpy.argmax(values)) == answer else 0.0)
    return outcomes


def pass_at_k(n: int, correct: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k), as the product prod_{i = n - c + 1}^{n} (1 - k / i) (no huge binomials)."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} of {correct} right out of {n}: expected 0 <= c <= n and 1 <= k <= n")
    if n - correct < k:  # every draw of k holds a right answer
        return 1.0
    miss = 1.0
    for i in range(n - correct + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def ratio_stderr(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Standard error of R = sum(y) / sum(x) over n documents by the delta method (first-order Taylor).

    With residuals d_i = y_i - R * x_i:  SE(R) = sqrt(sum(d_i^2) / (n * (n - 1))) / mean(x),
    the usual ratio-estimator variance (documents as the sampled units; long documents weigh more,
    as they do in R). None for fewer than 2 documents.
    """
    y = numpy.asarray(numerators, dtype=numpy.float64)
    x = numpy.asarray(denominators, dtype=numpy.float64)
    n = y.size
    if n < 2:
        return None
    ratio = y.sum() / x.sum()
    residuals = y - ratio * x
    return float(math.sqrt(float((residuals**2).sum()) / (n * (n - 1))) / x.mean())


def perplexity_metrics(
    doc_logprob_sums: Sequence[float],
    doc_tokens: Sequence[int],
    doc_bytes: Sequence[int] | None,
) -> dict[str, tuple[float, float | None]]:
    """{"perplexity": (value, stderr), "bits_per_byte": (value, stderr)} pooled over documents.

    doc_logprob_sums[i] is the summed natural-log probability of document i's `doc_tokens[i]` scored
    tokens, whose text is `doc_bytes[i]` UTF-8 bytes. perplexity = exp(R_tok) with R_tok the
    per-token NLL ratio, so its delta-method stderr is perplexity * SE(R_tok); bits_per_byte =
    R_byte / ln 2 with stderr SE(R_byte) / ln 2. `doc_bytes=None` (token shards read without a text
    tokenizer) leaves bits_per_byte out. Documents with no scored tokens add nothing and are not
    counted in the standard errors.
    """
    if len(doc_logprob_sums) != len(doc_tokens) or (doc_bytes is not None and len(doc_bytes) != len(doc_tokens)):
        raise ValueError(
            f"{len(doc_logprob_sums)} log-prob sums, {len(doc_tokens)} token counts, "
            f"{'no' if doc_bytes is None else len(doc_bytes)} byte counts"
        )
    if any(t < 0 for t in doc_tokens) or (doc_bytes is not None and any(b < 0 for b in doc_bytes)):
        raise ValueError("negative token or byte counts")
    kept = [i for i, t in enumerate(doc_tokens) if t > 0]
    if not kept:
        raise ValueError("perplexity of no scored tokens")
    nll = [-float(doc_logprob_sums[i]) for i in kept]
    tokens = [doc_tokens[i] for i in kept]
    total_nll = sum(nll)
    nll_per_token = total_nll / sum(tokens)
    perplexity = math.exp(nll_per_token) if nll_per_token < 700 else math.inf
    token_se = ratio_stderr(nll, tokens)
    metrics = {"perplexity": (perplexity, None if token_se is None else perplexity * token_se)}
    if doc_bytes is not None:
        size = [doc_bytes[i] for i in kept]
        if sum(size) < 1:
            raise ValueError("bits_per_byte of documents with no bytes")
        byte_se = ratio_stderr(nll, size)
        ln2 = math.log(2)
        metrics["bits_per_byte"] = (total_nll / (sum(size) * ln2), None if byte_se is None else byte_se / ln2)
    return metrics
