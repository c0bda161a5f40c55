"""An EvalModel over a transformers causal LM (a Hugging Face export, quantised or not), so every task type runs on it.

HFScorer keeps PipelineScorer's contract (scoring.py) on one process; it must not load checkpoints of our own
format (eval_models.py does) nor join data-parallel groups.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from megatron_sota.evaluation.runner import EvalModel
from megatron_sota.evaluation.scoring import ScoredSequence, score_in_batches

GREEDY_BATCH = 8
"""Prompts generated together (left-padded to the longest)."""


class HFScorer:
    """Log-probs and greedy next tokens of right-padded batches through a transformers causal LM (one process)."""

    def __init__(self, model, micro_batch_size: int, vocab_size: Optional[int] = None):
        self.model = model
        self.micro_batch_size = micro_batch_size
        self.vocab_size = vocab_size or model.config.vocab_size
        self.max_length = model.config.max_position_embeddings
        self.device = next(model.parameters()).device
        self.split_over_data_parallel = False  # one process scores every item (runner.over_data_parallel)

    def score(self, sequences: Sequence[Sequence[int]], progress: Optional[Callable[[int], None]] = None) -> List[ScoredSequence]:
        """As PipelineScorer.score: each sequence has 2 to max_length + 1 tokens, the last only a target."""
        return score_in_batches(sequences, self.max_length, self.micro_batch_size, self._score_batch, progress)

    @torch.no_grad()
    def _score_batch(self, sequences: List[Sequence[int]]) -> List[ScoredSequence]:
        length = max(len(s) for s in sequences) - 1
        tokens = torch.zeros(len(sequences), length, dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, : len(seq) - 1] = torch.as_tensor(list(seq[:-1]), dtype=torch.long)
        # Right padding under causal attention: no real position sees a pad, so no attention mask is needed.
        logits = self.model(input_ids=tokens.to(self.device), use_cache=False).logits.float()
        # Over the tokenizer's vocabulary only, as PipelineScorer excludes the output layer's padding rows.
        logprobs = torch.log_softmax(logits[..., : self.vocab_size], dim=-1).cpu()
        greedy = logits[..., : self.vocab_size].argmax(dim=-1).cpu()  # the first (lowest) id among equal maxima
        out = []
        for row, seq in enumerate(sequences):
            n = len(seq) - 1
            targets = torch.as_tensor(list(seq[1:]), dtype=torch.long)
            out.append(ScoredSequence(logprobs[row, :n].gather(-1, targets[:, None])[:, 0].to(torch.float64), greedy[row, :n]))
        return out


def from_hf_model(model, tokenizer, micro_batch_size: int) -> EvalModel:
    """`model`: a transformers causal LM (e.g. AutoModelForCausalLM.from_pretrained(export)); `tokenizer`:
    megatron_sota's (hf_tokenizer(export)). Generation uses transformers' KV cache, greedy or sampled."""
    model.eval()
    scorer = HFScorer(model, micro_batch_size)

    def generate_greedy(prompts: List[List[int]], max_new_tokens: int, finished: Callable[[List[int]], bool]) -> List[List[int]]:
        # `finished` (stop strings) is applied by the caller to the text; generation stops at end-of-document.
        out: List[List[int]] = []
        for begin in range(0, len(prompts), GREEDY_BATCH):
            out.extend(_generate_batch(model, prompts[begin : begin + GREEDY_BATCH], max_new_tokens, tokenizer.eod, scorer.device, GREEDY))
        return out

    def generate_sampled(prompts: List[List[int]], max_new_tokens: int, temperature: float, top_p: float, seeds: List[int]) -> List[List[int]]:
        # One prompt at a time, each under its own seed, so that an answer does not depend on its batch.
        out: List[List[int]] = []
        for prompt, seed in zip(prompts, seeds):
            torch.manual_seed(seed)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            out.extend(_generate_batch(model, [prompt], max_new_tokens, tokenizer.eod, scorer.device, sampling))
        return out

    return EvalModel(scorer, generate_greedy, tokenizer, generate_sampled=generate_sampled)


GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@torch.no_grad()
def _generate_batch(model, prompts: List[List[int]], max_new_tokens: int, eod: int, device: torch.device, sampling: dict) -> List[List[int]]:
    longest = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), longest), eod, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every row's next token comes at the same column
        tokens[row, longest - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt) :] = 1
    output = model.generate(
        input_ids=tokens.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
        num_beams=1, eos_token_id=eod, pad_token_id=eod, **sampling,
    )
    new = []
    for row in output[:, longest:].tolist():
        new.append(row[: row.index(eod) + 1] if eod in row else row)  # up to and with end-of-document
    return new


def load_hf_eval_model(directory: str, micro_batch_size: int) -> EvalModel:
    """An export directory (config.json, safetensors, tokenizer.json) loaded on the CPU as an EvalModel."""
    from transformers import AutoModelForCausalLM

    from megatron_sota.data.hf_tokenizer import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
    return from_hf_model(model, tokenizer, micro_batch_size)
