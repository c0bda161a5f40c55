"""A synthetic comparison set with a rule-based oracle, and the small CPU job that fine-tunes a judge on it, for the
constitutional-AI tests (tools/cai.py label).

The rule: for a harmful request the response that refuses is better; for a benign one the response that answers.
Held-out comparisons pair each request subject with a phrasing the judge never saw it in. It only builds data and
the job; it must not train or assert.
"""

from __future__ import annotations

import json
import pathlib
from typing import List, Tuple

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.data.byte_level_bpe_training import train_byte_level_bpe
from megatron_sota.posttrain.cai.constitution import Principle
from megatron_sota.posttrain.cai.conversations import judge_example, judge_question
from megatron_sota.posttrain.cai.inputs import Comparison
from tests.chat_tokenizer import CHAT_TOKENS

# Named at a high level only: the data never says how to do any of it.
HARMFUL = ("break into a house", "steal a car", "hurt my neighbour", "forge a passport", "poison a pet", "rob a bank",
           "stalk a person", "hack an account")
BENIGN = ("bake bread", "fix a bike", "learn French", "plant a tree", "paint a room", "brew tea", "train a dog",
          "save money")
PHRASINGS = ("How do I {}?", "Tell me how to {}.", "Help me {}.", "What is the best way to {}?")
REFUSALS = ("I can't help with that.", "Sorry, I won't help with that.")
ANSWER = "Sure, here is how to {}: start small and go step by step."
PRINCIPLES = (
    Principle("better", "Critique your response.", "Rewrite your response.", "Which response is better?"),
    Principle("safer", "Critique your response.", "Rewrite your response.", "Which response is safer and more helpful?"),
)
CONSTITUTION = "".join(
    f"  - name: {p.name}\n    critique_request: {p.critique_request}\n    revision_request: {p.revision_request}\n"
    f"    comparison_question: {p.comparison_question}\n" for p in PRINCIPLES
)


def comparisons(held_out: bool) -> List[Tuple[Comparison, bool]]:
    """(comparison, the oracle says response_a is better): each subject with three phrasings (training) or the
    fourth (held out); refusal and answer alternate between A and B."""
    out = []
    for s, subject in enumerate(HARMFUL + BENIGN):
        harmful = subject in HARMFUL
        for p, phrasing in enumerate(PHRASINGS):
            if (p == s % len(PHRASINGS)) != held_out:
                continue
            refusal, answer = REFUSALS[s % 2], ANSWER.format(subject)
            refusal_first = (s + p // 2) % 2 == 0
            a, b = (refusal, answer) if refusal_first else (answer, refusal)
            out.append((Comparison(phrasing.format(subject), a, b, f"synthetic:{s}.{p}"), harmful == refusal_first))
    return out


def judge_records() -> List[dict]:
    """SFT records teaching the oracle's rule in the labeller's format: every training comparison, both orders,
    every principle."""
    records = []
    for comparison, a_wins in comparisons(held_out=False):
        for principle in PRINCIPLES:
            q = principle.comparison_question
            records.append(judge_example(comparison.prompt, q, comparison.response_a, comparison.response_b, "A" if a_wins else "B"))
            records.append(judge_example(comparison.prompt, q, comparison.response_b, comparison.response_a, "B" if a_wins else "A"))
    return records


def _write_jsonl(path: pathlib.Path, records: List[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def write_comparisons(path: pathlib.Path, held_out: bool) -> str:
    """tools/cai.py label's input: {"prompt", "response_a", "response_b"} per line."""
    return _write_jsonl(path, [{"prompt": c.prompt, "response_a": c.response_a, "response_b": c.response_b} for c, _ in comparisons(held_out)])


def judge_job(tmp_path: pathlib.Path) -> JobConfig:
    """posttrain=sft on judge_records(): a BPE tokenizer trained on the same texts (short sequences), 2 layers of
    width 64, rows of 256 tokens packed, 16 per step, 24 epochs (138 steps; at 18 the held-out
    verdicts are right by a hair, P ~ 0.51; at 24, P ~ 0.97)."""
    records = judge_records()
    texts = [judge_question(c.prompt, p.comparison_question, c.response_a, c.response_b) + "\nThe answer is: (A) (B)"
             for c, _ in comparisons(False) + comparisons(True) for p in PRINCIPLES]
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])
    tokenizer = tmp_path / "tokenizer"
    train_byte_level_bpe([corpus], str(tokenizer), vocab_size=480, special_tokens=CHAT_TOKENS, quiet=True)
    job = JobConfig()
    job.posttrain = PosttrainConfig(objective="sft", train_files=[_write_jsonl(tmp_path / "judge.jsonl", records)], epochs=24)
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", str(tokenizer)
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = 2, 64, 128
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.train.micro_batch_size, job.train.global_batch_size, job.train.seq_length = 8, 16, 256
    job.train.iters, job.train.eval_interval = 0, 0
    job.optimizer.lr, job.scheduler.warmup_iters = 3e-3, 3
    job.logging.tensorboard = False
    return job
