"""Runs evaluation tasks on a model: builds the requests of a task, scores them, and turns scores into metrics.

Model access goes through an `EvalModel` (a PipelineScorer plus a greedy generator), so the
same task code serves the offline tool and in-loop evaluation. Requests are split over
data-parallel replicas; every rank returns the same metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.answer_extraction import exact_match
from megatron_sota.evaluation.metrics import mean_stderr, multiple_choice_scores, perplexity_metrics
from megatron_sota.evaluation.passkey import check_lengths_fit, passkey_samples, read_filler
from megatron_sota.evaluation.passkey_report import passkey_rows
from megatron_sota.evaluation.prompting import (
    check_prompts, exact_match_prompt, multiple_choice_context, multiple_choice_continuations, without_delimiter,
)
from megatron_sota.evaluation.refusal import limited, read_refusal, refusal_prompt, refusal_rows
from megatron_sota.evaluation.refusal_detection import DEFAULT_REFUSAL_PHRASES, RefusalDetector
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.scoring import PipelineScorer
from megatron_sota.evaluation.task_files import read_exact_match, read_multiple_choice, read_text_documents
from megatron_sota.evaluation.task_spec import TaskSpec

GreedyGenerator = Callable[[List[List[int]], int, Callable[[List[int]], bool]], List[List[int]]]
"""(prompts, max_new_tokens, finished) -> greedy new tokens per prompt; a row may stop once finished(its new tokens)."""

Progress = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class ChatFormat:
    """How a chat-formatted task's conversation becomes the prompt text (`chat: true` in a task file)."""

    render: Callable[[List[dict]], str]
    """Messages -> the prompt text, ending with the assistant's generation prompt."""
    stop: Tuple[str, ...] = ()
    """The end-of-turn text, when the tokenizer has no single token that ends a turn (a model never post-trained)."""


@dataclass
class EvalModel:
    scorer: PipelineScorer
    generate_greedy: GreedyGenerator
    tokenizer: object
    """megatron_sota's tokenizer: tokenize, detokenize, eod."""
    chat: Optional[ChatFormat] = None
    """The chat template, for tasks with `chat: true`."""


def encode_pair(tokenizer, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """Token ids of (context, continuation) as lm-evaluation-harness splits them.

    The context's trailing spaces move to the continuation and the pair is encoded whole, so the
    continuation's tokens are the ones the model would see after that context.
    """
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.tokenize(context + continuation)
    context_ids = tokenizer.tokenize(context)
    if whole[: len(context_ids)] != context_ids:  # the boundary merged into one token: split by the context alone
        return context_ids, tokenizer.tokenize(continuation)
    if not context_ids:  # nothing to condition on: the end-of-document token starts every text
        return [tokenizer.eod], whole
    return context_ids, whole[len(context_ids):]


def loglikelihoods(scorer: PipelineScorer, requests: Sequence[Tuple[List[int], List[int]]], progress: Progress = None) -> torch.Tensor:
    """[n, 1]: the sum of each continuation's log-probs given its context."""
    sequences, spans = [], []
    limit = scorer.max_length + 1
    for context, continuation in requests:
        if not continuation:
            raise MegatronSotaError("a continuation tokenizes to no tokens")
        sequence = (list(context) + list(continuation))[-limit:]  # the context is cut from the left, as lm-eval does
        sequences.append(sequence)
        spans.append(min(len(continuation), len(sequence) - 1))
    scored = scorer.score(sequences, progress)
    out = torch.zeros(len(requests), 1, dtype=torch.float64)
    for row, (span, item) in enumerate(zip(spans, scored)):
        out[row, 0] = item.logprobs[-span:].sum()
    return out


def over_data_parallel(items: Sequence, compute: Callable[[Sequence], torch.Tensor], columns: int, scorer) -> torch.Tensor:
    """Each data-parallel replica computes rows for its share of `items`; every rank gets all rows. Where the
    scorer's forward is itself a collective over the replicas (fully sharded weights), each computes them all."""
    from megatron.core import parallel_state

    if not scorer.split_over_data_parallel:
        return compute(items).to(torch.float64)
    device = scorer.device
    dp = parallel_state.get_data_parallel_world_size()
    rank = parallel_state.get_data_parallel_rank()
    mine = list(range(rank, len(items), dp))
    rows = torch.zeros(len(items), columns, dtype=torch.float64)
    if mine:
        rows[mine] = compute([items[i] for i in mine]).to(torch.float64)
    if dp > 1:
        on_device = rows.to(device)  # NCCL reduces only device tensors
        torch.distributed.all_reduce(on_device, group=parallel_state.get_data_parallel_group())
        rows = on_device.cpu()
    return rows


def _limited(items: list, spec: TaskSpec, limit: Optional[int]) -> int:
    bounds = [b for b in (spec.limit, limit) if b is not None]
    return min([len(items), *bounds])


def multiple_choice(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    items = read_multiple_choice(spec.path)
    n = _limited(items, spec, limit)
    requests, owners, choices = [], [], []
    for index in range(n):
        context = multiple_choice_context(spec, items, index)
        continuations = multiple_choice_continuations(spec, items[index])
        choices.append([without_delimiter(spec, c) for c in continuations])
        for text in continuations:
            requests.append(encode_pair(model.tokenizer, context, text))
            owners.append(index)
    scores = over_data_parallel(requests, lambda share: loglikelihoods(model.scorer, share, progress), 1, model.scorer)[:, 0]
    per_item: List[List[float]] = [[] for _ in range(n)]
    for owner, value in zip(owners, scores.tolist()):
        per_item[owner].append(value)
    outcomes = multiple_choice_scores(per_item, choices, [items[i].answer for i in range(n)])
    return [MetricRow(spec.name, metric, *mean_stderr(values), n) for metric, values in outcomes.items()]


def _prompt_room(spec: TaskSpec, model: EvalModel) -> int:
    """Prompt tokens that fit in the model's context beside the task's generation budget."""
    room = model.scorer.max_length - spec.max_new_tokens
    if room < 1:
        raise MegatronSotaError(f"task {spec.name}: max_new_tokens={spec.max_new_tokens} leaves no room for a prompt in the model's context ({model.scorer.max_length})")
    return room


def greedy_scores(spec: TaskSpec, model: EvalModel, prompts: Sequence[List[int]], score: Callable[[int, str], float], progress: Progress) -> List[float]:
    """score(i, text) per prompt i, `text` its greedy continuation cut at the task's stop strings (DP-sharded)."""
    def finished(ids: List[int]) -> bool:
        return model.tokenizer.eod in ids or any(s and s in model.tokenizer.detokenize(ids) for s in spec.stop)

    def scored(share: Sequence[int]) -> torch.Tensor:
        new = model.generate_greedy([prompts[i] for i in share], spec.max_new_tokens, finished)
        if progress is not None:
            progress(len(share))
        return torch.tensor([[float(score(i, _cut_at_stop(model.tokenizer, ids, spec.stop)))] for i, ids in zip(share, new)])

    return over_data_parallel(list(range(len(prompts))), scored, 1, model.scorer)[:, 0].tolist()


def greedy_exact_match(spec: TaskSpec, model: EvalModel, prompts: Sequence[List[int]], answers: Sequence[str], progress: Progress) -> List[float]:
    """1.0/0.0 per prompt: its greedy continuation, cut at the task's stop strings, ends in its answer (DP-sharded)."""
    return greedy_scores(spec, model, prompts, lambda i, text: exact_match(text, answers[i]), progress)


def refusal_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    """Greedy responses to harmful and benign prompts, each judged a refusal or not (refusal.py, refusal_detection.py)."""
    items = limited(read_refusal(spec.path, spec.categories), min([b for b in (spec.limit, limit) if b is not None], default=None))
    detector = RefusalDetector(spec.refusal_phrases or DEFAULT_REFUSAL_PHRASES)
    room = _prompt_room(spec, model)
    prompts = [model.tokenizer.tokenize(refusal_prompt(spec, item))[-room:] for item in items]
    refused = greedy_scores(spec, model, prompts, lambda i, text: float(detector.is_refusal(text)), progress)
    return refusal_rows(spec.name, spec.categories, items, refused)


def exact_match_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    items = read_exact_match(spec.path)
    n = _limited(items, spec, limit)
    room = _prompt_room(spec, model)
    prompts = [model.tokenizer.tokenize(exact_match_prompt(spec, items, i))[-room:] for i in range(n)]
    values = greedy_exact_match(spec, model, prompts, [item.answer for item in items[:n]], progress)
    return [MetricRow(spec.name, "exact_match", *mean_stderr(values), n)]


def passkey_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    """exact_match over all samples, then one row per (length, depth) cell (passkey_report.cell_metric)."""
    # The prompt is never cut (the needle could go): a length that does not fit is refused.
    check_lengths_fit(spec, _prompt_room(spec, model) + spec.max_new_tokens, "context (max_position_embeddings rounded down to 16 x TP)")
    samples = passkey_samples(spec, model.tokenizer, limit)
    values = greedy_exact_match(spec, model, [s.tokens for s in samples], [s.key for s in samples], progress)
    return passkey_rows(spec.name, samples, values)


def _cut_at_stop(tokenizer, ids: List[int], stops: Sequence[str]) -> str:
    if tokenizer.eod in ids:
        ids = ids[: ids.index(tokenizer.eod)]
    text = tokenizer.detokenize(ids)
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


def _documents(spec: TaskSpec, tokenizer, limit: Optional[int]) -> Tuple[List[List[int]], List[Optional[int]]]:
    """Token ids and UTF-8 byte counts of the task's documents (JSONL text, or a .bin/.idx prefix)."""
    if spec.path.endswith(".jsonl"):
        texts = read_text_documents(spec.path)
        texts = texts[: _limited(texts, spec, limit)]
        return [tokenizer.tokenize(t) for t in texts], [len(t.encode("utf-8")) for t in texts]
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(spec.path)
    count = _limited(list(range(len(dataset))), spec, limit)
    documents = [dataset[i].tolist() for i in range(count)]
    has_text = type(tokenizer).__name__ != "NullTokenizer"
    sizes = [len(tokenizer.detokenize([t for t in d if t != tokenizer.eod]).encode("utf-8")) if has_text else None for d in documents]
    return documents, sizes


def rolling_windows(tokens: List[int], prefix: int, max_length: int) -> List[Tuple[List[int], List[int]]]:
    """(context, continuation) pairs that score every token of a document exactly once.

    The first window scores up to max_length tokens after `prefix`; each later one scores the next
    max_length // 2 tokens with the preceding tokens as context, so every token has at least
    half a window of context.
    """
    full = [prefix, *tokens]
    stride = max(1, max_length // 2)
    pairs, done = [], 0  # full[1 : done + 1] are scored
    while done < len(full) - 1:
        end = min(len(full), done + 1 + (max_length if done == 0 else stride))
        start = max(0, end - max_length - 1)
        pairs.append((full[start : done + 1], full[done + 1 : end]))
        done = end - 1
    return pairs


def perplexity(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    documents, sizes = _documents(spec, model.tokenizer, limit)
    if not any(documents):
        raise MegatronSotaError(f"task {spec.name}: {spec.path} holds no tokens to score")
    requests, owners = [], []
    for index, tokens in enumerate(documents):
        for pair in rolling_windows(tokens, model.tokenizer.eod, model.scorer.max_length):
            requests.append(pair)
            owners.append(index)
    scores = over_data_parallel(requests, lambda share: loglikelihoods(model.scorer, share, progress), 1, model.scorer)[:, 0]
    sums = [0.0] * len(documents)
    for owner, value in zip(owners, scores.tolist()):
        sums[owner] += value
    counts = [len(d) for d in documents]
    metrics = perplexity_metrics(sums, counts, sizes if all(s is not None for s in sizes) else None)
    return [MetricRow(spec.name, metric, value, stderr, len(documents)) for metric, (value, stderr) in metrics.items()]


READERS = {"multiple_choice": read_multiple_choice, "exact_match": read_exact_match, "perplexity": read_text_documents}


def check_task_data(spec: TaskSpec) -> None:
    """Reads a task's JSONL and builds its prompts once, so that a malformed record or template fails before any model is loaded."""
    if spec.type == "passkey":
        read_filler(spec)
    elif spec.type == "refusal":
        for item in read_refusal(spec.path, spec.categories):
            refusal_prompt(spec, item)
    elif spec.path.endswith(".jsonl"):
        records = READERS[spec.type](spec.path)
        if spec.type != "perplexity":
            check_prompts(spec, records)


RUNNERS = {"multiple_choice": multiple_choice, "exact_match": exact_match_task, "perplexity": perplexity, "passkey": passkey_task, "refusal": refusal_task}


def evaluate(spec: TaskSpec, model: EvalModel, limit: Optional[int] = None, progress: Progress = None) -> List[MetricRow]:
    rows = RUNNERS[spec.type](spec, model, limit, progress)
    for row in rows:
        if not math.isfinite(row.value):
            raise MegatronSotaError(f"task {spec.name}: {row.metric} is {row.value} (non-finite scores: a broken checkpoint?)")
    return rows
