"""Runs evaluation tasks on a model: builds the requests of a task, scores them, and turns scores into metrics.

Model access goes through an `EvalModel` (a PipelineScorer, a greedy and, where the model can, a sampling
generator, and a chat template), so the same task code serves the offline tool and in-loop evaluation.
Requests are split over data-parallel replicas; every rank returns the same metrics.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.answer_extraction import exact_match, extract_choice_letter
from megatron_sota.evaluation.code_execution import CHAT_INSTRUCTION, STOP_SEQUENCES, answer_code, completion_program, run_samples
from megatron_sota.evaluation.metrics import mean_stderr, multiple_choice_scores, pass_at_k, perplexity_metrics
from megatron_sota.evaluation.passkey import check_lengths_fit, passkey_samples, read_filler
from megatron_sota.evaluation.passkey_report import passkey_rows
from megatron_sota.evaluation.prompting import (
    check_prompts, exact_match_messages, exact_match_prompt, multiple_choice_context, multiple_choice_continuations,
    without_delimiter,
)
from megatron_sota.evaluation.refusal import limited, read_refusal, refusal_prompt, refusal_rows
from megatron_sota.evaluation.refusal_detection import DEFAULT_REFUSAL_PHRASES, RefusalDetector
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.scoring import PipelineScorer
from megatron_sota.evaluation.task_data import choice_count, read_task_items
from megatron_sota.evaluation.task_files import read_text_documents
from megatron_sota.evaluation.task_spec import TaskSpec

GreedyGenerator = Callable[[List[List[int]], int, Callable[[List[int]], bool]], List[List[int]]]
"""(prompts, max_new_tokens, finished) -> greedy new tokens per prompt; a row may stop once finished(its new tokens)."""

SampledGenerator = Callable[[List[List[int]], int, float, float, List[int]], List[List[int]]]
"""(prompts, max_new_tokens, temperature, top_p, one seed per prompt) -> sampled new tokens per prompt, each row's draws
depending only on its seed (not on its batch), up to and with end-of-document."""
BatchScore = Callable[[List[Tuple[int, str]]], List[float]]
"""[(record index, generated text)] -> one score per answer (a batch, so that code can run its tests in parallel)."""

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
    generate_sampled: Optional[SampledGenerator] = None
    """For tasks with temperature > 0; None where the model cannot sample (the model being trained)."""


def encode_pair(tokenizer, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """Token ids of (context, continuation) as lm-evaluation-harness splits them.

    The context's trailing whitespace (spaces, newlines) moves to the continuation and the pair is encoded whole,
    so the continuation's tokens are the ones the model would see after that context.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.tokenize(context + continuation)
    context_ids = tokenizer.tokenize(context)
    if whole[: len(context_ids)] != context_ids:  # the boundary merged into one token: split by the context alone
        return context_ids, tokenizer.tokenize(continuation)
    if not context_ids:  # nothing to condition on: the end-of-document token starts every text
        return [tokenizer.eod], whole
    return context_ids, whole[len(context_ids):]


def score_pairs(
    scorer: PipelineScorer, requests: Sequence[Tuple[List[int], List[int]]], progress: Progress = None,
    max_length: Optional[int] = None,
) -> List[Tuple[float, bool]]:
    """(sum of the continuation's log-probs given its context, whether greedy decoding writes the continuation) per
    request; the context is cut from the left to fit max_length (default: the scorer's), as lm-eval cuts it."""
    sequences, spans = [], []
    limit = (scorer.max_length if max_length is None else max_length) + 1
    for context, continuation in requests:
        if not continuation:
            raise MegatronSotaError("a continuation tokenizes to no tokens")
        sequence = (list(context) + list(continuation))[-limit:]
        sequences.append(sequence)
        spans.append(min(len(continuation), len(sequence) - 1))
    scored = scorer.score(sequences, progress)
    return [
        (float(item.logprobs[-span:].sum()), item.greedy[-span:].tolist() == sequence[-span:])
        for sequence, span, item in zip(sequences, spans, scored)
    ]


def loglikelihoods(scorer: PipelineScorer, requests: Sequence[Tuple[List[int], List[int]]], progress: Progress = None) -> torch.Tensor:
    """[n, 1]: the sum of each continuation's log-probs given its context."""
    return torch.tensor([[total] for total, _ in score_pairs(scorer, requests, progress)], dtype=torch.float64).reshape(len(requests), 1)


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
    items = read_task_items(spec)
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
    rows = [MetricRow(spec.name, metric, *mean_stderr(values), n) for metric, values in outcomes.items()]
    if spec.format == "mmlu":
        rows.extend(subject_rows(spec.name, [items[i].fields["subject"] for i in range(n)], outcomes["acc"]))
    return rows


def subject_rows(task: str, subjects: Sequence[str], acc: Sequence[float]) -> List[MetricRow]:
    """MMLU's report: acc per subject ("acc/<subject>") and their unweighted mean ("acc_macro"; "acc" is the micro
    average over questions). The macro stderr treats each subject's mean as independent: sqrt(sum se^2) / subjects."""
    groups: Dict[str, List[float]] = defaultdict(list)
    for subject, value in zip(subjects, acc):
        groups[subject].append(value)
    rows = [MetricRow(task, f"acc/{subject}", *mean_stderr(values), len(values)) for subject, values in sorted(groups.items())]
    errors = [row.stderr for row in rows]
    macro_se = None if None in errors else math.sqrt(sum(e * e for e in errors)) / len(rows)
    return [MetricRow(task, "acc_macro", sum(row.value for row in rows) / len(rows), macro_se, len(acc)), *rows]


def _prompt_room(spec: TaskSpec, model: EvalModel) -> int:
    """Prompt tokens that fit in the model's context beside the task's generation budget."""
    room = model.scorer.max_length - spec.max_new_tokens
    if room < 1:
        raise MegatronSotaError(f"task {spec.name}: max_new_tokens={spec.max_new_tokens} leaves no room for a prompt in the model's context ({model.scorer.max_length})")
    return room


def generated_scores(
    spec: TaskSpec, model: EvalModel, prompts: Sequence[List[int]], score: BatchScore, progress: Progress,
    stops: Optional[Sequence[str]] = None,
) -> List[List[float]]:
    """[record][sample]: the task's num_samples answers to each prompt (greedy at temperature 0, else sampled, each
    sample seeded by the task's seed, the record and the sample), cut at the stop strings (the task's, or `stops`) and
    scored; the (record, sample) pairs are split over data-parallel replicas."""
    stops = tuple(spec.stop if stops is None else stops) + (model.chat.stop if spec.chat and model.chat is not None else ())
    n = spec.num_samples
    if spec.temperature > 0 and model.generate_sampled is None:
        raise MegatronSotaError(f"task {spec.name}: temperature {spec.temperature} samples answers, which this model cannot do "
                                f"(in-loop evaluation decodes greedily): run it with tools/evaluate.py on a checkpoint")

    def finished(ids: List[int]) -> bool:
        return model.tokenizer.eod in ids or any(s and s in model.tokenizer.detokenize(ids) for s in stops)

    def scored(share: Sequence[Tuple[int, int]]) -> torch.Tensor:
        batch = [prompts[i] for i, _ in share]
        if spec.temperature == 0:
            new = model.generate_greedy(batch, spec.max_new_tokens, finished)
        else:
            seeds = [sample_seed(spec.seed, i, j) for i, j in share]
            new = model.generate_sampled(batch, spec.max_new_tokens, spec.temperature, spec.top_p, seeds)
        values = score([(i, _cut_at_stop(model.tokenizer, ids, stops)) for (i, _), ids in zip(share, new)])
        if progress is not None:
            progress(len(share))
        return torch.tensor([[float(v)] for v in values])

    pairs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    flat = over_data_parallel(pairs, scored, 1, model.scorer)[:, 0].tolist()
    return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


def sample_seed(seed: int, record: int, sample: int) -> int:
    """The seed of one sampled answer: the same for the same (task seed, record, sample) whatever the batch or rank."""
    return random.Random(f"{seed}:{record}:{sample}").getrandbits(62)


def greedy_scores(spec: TaskSpec, model: EvalModel, prompts: Sequence[List[int]], score: Callable[[int, str], float], progress: Progress) -> List[float]:
    """score(i, text) per prompt i, `text` its greedy continuation cut at the task's stop strings (DP-sharded)."""
    rows = generated_scores(spec, model, prompts, lambda answers: [score(i, text) for i, text in answers], progress)
    return [row[0] for row in rows]  # passkey and refusal tasks have no sampling keys: one greedy answer each


def greedy_exact_match(spec: TaskSpec, model: EvalModel, prompts: Sequence[List[int]], answers: Sequence[str], progress: Progress) -> List[float]:
    """1.0/0.0 per prompt: its greedy continuation, cut at the task's stop strings, ends in its answer (DP-sharded)."""
    return greedy_scores(spec, model, prompts, lambda i, text: exact_match(text, answers[i]), progress)


def sampled_rows(spec: TaskSpec, outcomes: List[List[float]], metric: Optional[str]) -> List[MetricRow]:
    """`metric` (the mean of every answer's 0/1, per record, then over records; None: not reported), then pass@k for
    each k of the task: the unbiased estimator on each record's n answers, averaged over records."""
    rows = [MetricRow(spec.name, metric, *mean_stderr([sum(o) / len(o) for o in outcomes]), len(outcomes))] if metric else []
    for k in spec.pass_at:
        per_record = [pass_at_k(len(o), int(sum(o)), k) for o in outcomes]
        rows.append(MetricRow(spec.name, f"pass@{k}", *mean_stderr(per_record), len(outcomes)))
    return rows


def chat_prompt(spec: TaskSpec, model: EvalModel, messages: List[dict]) -> str:
    if model.chat is None:
        raise MegatronSotaError(f"task {spec.name}: chat: true, but this model was given no chat template")
    return model.chat.render(messages)


def refusal_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    """Greedy responses to harmful and benign prompts, each judged a refusal or not (refusal.py, refusal_detection.py)."""
    items = limited(read_refusal(spec.path, spec.categories), min([b for b in (spec.limit, limit) if b is not None], default=None))
    detector = RefusalDetector(spec.refusal_phrases or DEFAULT_REFUSAL_PHRASES)
    room = _prompt_room(spec, model)
    texts = [refusal_prompt(spec, item) for item in items]
    if spec.chat:
        texts = [chat_prompt(spec, model, [{"role": "user", "content": text}]) for text in texts]
    prompts = [model.tokenizer.tokenize(text)[-room:] for text in texts]
    refused = greedy_scores(spec, model, prompts, lambda i, text: float(detector.is_refusal(text)), progress)
    return refusal_rows(spec.name, spec.categories, items, refused)


def exact_match_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    """Generated answers scored by their final integer (answer_extraction), or by the letter they pick (GPQA)."""
    items = read_task_items(spec)
    n = _limited(items, spec, limit)
    room = _prompt_room(spec, model)
    texts = [chat_prompt(spec, model, exact_match_messages(spec, items, i)) if spec.chat else exact_match_prompt(spec, items, i) for i in range(n)]
    prompts = [model.tokenizer.tokenize(text)[-room:] for text in texts]

    def correct(i: int, text: str) -> float:
        if spec.format == "gpqa":
            return float(extract_choice_letter(text, choice_count(items[i])) == items[i].answer)
        return float(exact_match(text, items[i].answer))

    outcomes = generated_scores(spec, model, prompts, lambda answers: [correct(i, text) for i, text in answers], progress)
    if spec.num_samples == 1:
        return [MetricRow(spec.name, "exact_match", *mean_stderr([o[0] for o in outcomes]), n)]
    return sampled_rows(spec, outcomes, "exact_match")


def code_task(spec: TaskSpec, model: EvalModel, limit: Optional[int], progress: Progress) -> List[MetricRow]:
    """HumanEval/MBPP: each problem's prompt completed num_samples times, each completion run against the problem's
    tests in the sandbox (code_execution.py); pass@k over the samples."""
    problems = read_task_items(spec)
    n = _limited(problems, spec, limit)
    room = _prompt_room(spec, model)
    texts = [
        chat_prompt(spec, model, [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=p.prompt)}]) if spec.chat else p.prompt
        for p in problems[:n]
    ]
    prompts = [model.tokenizer.tokenize(text)[-room:] for text in texts]

    def passed(answers: List[Tuple[int, str]]) -> List[float]:
        programs = [
            completion_program(problems[i].prompt, answer_code(text, spec.chat), problems[i].test, problems[i].entry_point)
            for i, text in answers
        ]
        return [float(result.passed) for result in run_samples(programs)]

    outcomes = generated_scores(spec, model, prompts, passed, progress, stops=() if spec.chat else STOP_SEQUENCES)
    return sampled_rows(spec, outcomes, None)


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
    return cut_at_stops(tokenizer.detokenize(ids), stops)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to (not including) the earliest of the non-empty `stops`; unchanged when none occurs."""
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


def check_task_data(spec: TaskSpec) -> None:
    """Reads a task's JSONL and builds its prompts once, so that a malformed record or template fails before any model is loaded."""
    if spec.type == "passkey":
        read_filler(spec)
    elif spec.type == "refusal":
        for item in read_refusal(spec.path, spec.categories):
            refusal_prompt(spec, item)
    elif spec.type == "perplexity":
        if spec.path.endswith(".jsonl"):
            read_text_documents(spec.path)
    elif spec.type == "code":
        read_task_items(spec)
    else:
        check_prompts(spec, read_task_items(spec))


RUNNERS = {
    "multiple_choice": multiple_choice, "exact_match": exact_match_task, "perplexity": perplexity, "passkey": passkey_task,
    "refusal": refusal_task, "code": code_task,
}


def evaluate(spec: TaskSpec, model: EvalModel, limit: Optional[int] = None, progress: Progress = None) -> List[MetricRow]:
    rows = RUNNERS[spec.type](spec, model, limit, progress)
    for row in rows:
        if not math.isfinite(row.value):
            raise MegatronSotaError(f"task {spec.name}: {row.metric} is {row.value} (non-finite scores: a broken checkpoint?)")
    return rows
