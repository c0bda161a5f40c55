"""Rank bodies and task files of the evaluation tests (one process serves every check: spawning costs seconds)."""

from __future__ import annotations

import json
import os
from typing import Dict, List

import torch

from megatron_sota.data.tokenizer import build_configured_tokenizer
from megatron_sota.evaluation.eval_models import from_inference_model
from megatron_sota.evaluation.runner import encode_pair, evaluate, loglikelihoods
from megatron_sota.evaluation.scoring import PipelineScorer
from megatron_sota.evaluation.task_spec import load_task
from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.runtime.session import distributed_session

QUESTIONS = [
    ("def parse(self, text):\n    return self.", ["parser", "text", "value"], 0),
    ("import os\nimport", [" sys", " re", " json"], 0),
    ("class Foo:\n    def __init__(self", ["):", ", name):", ", *args, **kwargs):"], 1),
    ("for i in range(", ["10):", "len(items)):", "n):"], 2),
    ("    raise ValueError(", ["\"bad\")", "f\"unknown {name!r}\")", "msg)"], 2),
    ("if __name__ ==", [" \"__main__\":", " 'main':", " None:"], 0),
]
PROBLEMS = [("x = 1 + 2\nprint(x)  # prints", "3"), ("def f():\n    return 40 + 2\n# f() returns", "42"), ("import os", "7")]
DOCUMENTS = ["import os\nimport sys\n\n\ndef main():\n    return 0\n", "class Error(Exception):\n    pass\n"]


def write_tasks(root: str, gate_threshold: float) -> Dict[str, str]:
    """Task YAMLs and data in `root`: multiple choice, exact match, perplexity and a gated multiple choice."""
    def jsonl(name: str, records: List[dict]) -> str:
        path = os.path.join(root, name)
        with open(path, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        return name

    mc = jsonl("code_mc.jsonl", [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS])
    em = jsonl("code_em.jsonl", [{"question": q, "answer": a} for q, a in PROBLEMS])
    ppl = jsonl("code_ppl.jsonl", [{"text": t} for t in DOCUMENTS])
    specs = {
        "code_mc": f"type: multiple_choice\nfile: {mc}\nnum_fewshot: 1\ntemplate: \"{{question}}\"\nchoice_template: \"{{choice}}\"\n",
        "code_em": f"type: exact_match\nfile: {em}\nnum_fewshot: 1\ntemplate: \"{{question}}\"\nmax_new_tokens: 6\nstop: [\"\\n\"]\n",
        "code_ppl": f"type: perplexity\nfile: {ppl}\n",
        "code_mc_gate": f"type: multiple_choice\nfile: {mc}\ntemplate: \"{{question}}\"\nchoice_template: \"{{choice}}\"\nthresholds: {{acc: {gate_threshold}}}\n",
    }
    paths = {}
    for name, text in specs.items():
        paths[name] = os.path.join(root, f"{name}.yaml")
        with open(paths[name], "w") as handle:
            handle.write(text)
    return paths


def _direct_loglikelihood(model, context: List[int], continuation: List[int]) -> float:
    """From the model's full-vocabulary logits, without the scorer."""
    logprobs = torch.log_softmax(model.logits(torch.tensor([context + continuation]))[0].double(), dim=-1)
    return sum(float(logprobs[len(context) - 1 + j, token]) for j, token in enumerate(continuation))


def _synthetic_argmax() -> List[int]:
    """The vocabulary-parallel argmax on logits whose maxima lie in different TP shards, with a tie across shards."""
    from megatron.core import parallel_state

    from megatron_sota.evaluation.scoring import vocab_parallel_argmax

    full = torch.randn(4, 2048, generator=torch.Generator().manual_seed(0))
    full[1, 1500] = full[2, 3] = 10.0
    full[3, 100] = full[3, 1500] = 10.0  # a tie: the lowest id wins, as torch.argmax
    tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    width = full.shape[1] // tp
    found = vocab_parallel_argmax(full[:, rank * width : (rank + 1) * width], rank * width).tolist()
    assert found == full.argmax(-1).tolist() == [int(full[0].argmax()), 1500, 3, 100], found
    return found


def eval_probe(rank: int, checkpoint: str, task_files: Dict[str, str]) -> dict:
    """Every task's metrics, plus the same numbers computed directly from the model's logits."""
    from megatron_sota.evaluation.prompting import multiple_choice_context, multiple_choice_continuations
    from megatron_sota.evaluation.task_files import read_multiple_choice

    with distributed_session(inference_parallel(int(os.environ["WORLD_SIZE"])), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        tokenizer = build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
        eval_model = from_inference_model(model, tokenizer, micro_batch_size=2)
        specs = {name: load_task(path) for name, path in task_files.items()}
        rows = {name: [r.__dict__ for r in evaluate(spec, eval_model)] for name, spec in specs.items()}

        mc = specs["code_mc"]
        items = read_multiple_choice(mc.path)
        pairs, direct = [], []
        for index, item in enumerate(items):
            context = multiple_choice_context(mc, items, index)
            item_pairs = [encode_pair(tokenizer, context, text) for text in multiple_choice_continuations(mc, item)]
            pairs.extend(item_pairs)
            direct.append([(_direct_loglikelihood(model, *pair), choice) for pair, choice in zip(item_pairs, item.choices)])
        scored = loglikelihoods(eval_model.scorer, pairs)[:, 0].tolist()
        docs = [[tokenizer.eod] + tokenizer.tokenize(t) for t in DOCUMENTS]
        direct_ppl = [(_direct_loglikelihood(model, d[:1], d[1:]), len(d) - 1) for d in docs]

        # Greedy continuations: the KV-cached generator and the schedule's recomputing one.
        prompts = [tokenizer.tokenize(q) for q, _ in PROBLEMS]
        cached = eval_model.generate_greedy(prompts, 8, lambda ids: False)
        scorer = PipelineScorer([model.model], model.vocab_size, 2, model.job.model.max_position_embeddings, session.device)
        recomputed = scorer.greedy_continue(prompts, 8, lambda ids: False)
        # Teacher-forced greedy tokens at every position of a real text, scorer vs logits.
        text = tokenizer.tokenize(open(os.path.join(os.path.dirname(os.__file__), "textwrap.py")).read())[:120]
        per_position = {"scorer": scorer.score([text])[0].greedy.tolist(), "logits": model.logits(torch.tensor([text]))[0, :-1].argmax(-1).tolist()}
        return {"argmax": _synthetic_argmax(), "per_position": per_position, "rows": rows, "scored_mc": scored, "direct_mc": direct, "direct_ppl": direct_ppl, "cached": cached, "recomputed": recomputed}


PASSKEY_TASK = 'type: passkey\nlengths: [{lengths}]\ndepths: [0.0, 0.5, 1.0]\nsamples: 2\nmax_new_tokens: 6\nstop: ["\\n", "."]\n'


def write_passkey_task(root: str, name: str, lengths: str = "96, 160") -> str:
    """A passkey task YAML in `root`: lengths of a few hundred tokens at most, three depths, two samples per cell."""
    path = os.path.join(root, f"{name}.yaml")
    with open(path, "w") as handle:
        handle.write(PASSKEY_TASK.format(lengths=lengths))
    return path


def _direct_greedy(model, prompt: List[int], budget: int, eod: int) -> List[int]:
    """Greedy tokens by the argmax of the full logits, recomputed from scratch each step (no scorer, no KV cache)."""
    ids, new = list(prompt), []
    for _ in range(budget):
        token = int(model.logits(torch.tensor([ids]))[0, -1].argmax())
        if token == eod:
            break
        ids.append(token)
        new.append(token)
    return new


def passkey_probe(rank: int, checkpoint: str, task_file: str) -> dict:
    """The harness's passkey rows, each sample's direct greedy completion, and the harness's rows for a generator
    that copies the key out of the prompt at the first length only."""
    import re

    from megatron_sota.evaluation.passkey import passkey_samples
    from megatron_sota.evaluation.runner import EvalModel

    with distributed_session(inference_parallel(int(os.environ["WORLD_SIZE"])), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        tokenizer = build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
        eval_model = from_inference_model(model, tokenizer, micro_batch_size=2)
        spec = load_task(task_file)
        rows = [r.__dict__ for r in evaluate(spec, eval_model)]
        direct = [
            {"length": s.length, "depth": s.depth, "key": s.key,
             "text": tokenizer.detokenize(_direct_greedy(model, s.tokens, spec.max_new_tokens, tokenizer.eod))}
            for s in passkey_samples(spec, tokenizer)
        ]

        def retriever(prompts: List[List[int]], budget: int, finished) -> List[List[int]]:
            keys = [re.search(r"pass key is (\d+)", tokenizer.detokenize(p)).group(1) for p in prompts]
            return [tokenizer.tokenize(f" {key}. Remember" if len(p) == spec.lengths[0] else f" {int(key) + 1}.") for key, p in zip(keys, prompts)]

        retrieved = [r.__dict__ for r in evaluate(spec, EvalModel(eval_model.scorer, retriever, tokenizer))]
        return {"rows": rows, "direct": direct, "retrieved": retrieved}
