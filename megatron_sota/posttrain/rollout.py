"""PPO/GRPO rollouts: the actor's own chunks generate responses (KV cache), which are scored and turned into a Rollout.

It generates, scores and computes advantages; it must not train (posttrain/rl.py) nor decide the math
(posttrain/advantages.py, posttrain/ppo_loss.py).

Each data-parallel replica generates and scores its share of the batch's rows (the tensor-parallel ranks of a
replica draw the same tokens, generation.py); the per-row arrays are then gathered over the data-parallel group,
so every rank holds the whole batch and computes the same advantages (whitening and group statistics are global).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from megatron.core import parallel_state

from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.inference.checkpoint_model import InferenceModel
from megatron_sota.inference.generation import generate
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.posttrain.advantages import explained_variance, gae, group_advantages, masked_mean, masked_whiten
from megatron_sota.posttrain.ppo_loss import kl_estimate, kl_penalised_rewards
from megatron_sota.posttrain.prompt_data import PromptRecord
from megatron_sota.posttrain.reward_loss import last_real_token_scores
from megatron_sota.posttrain.rollout_buffer import Rollout
from megatron_sota.posttrain.token_logps import token_logps


@dataclass
class Scorers:
    """What a rollout is scored with besides the actor."""

    reward_model: Optional[InferenceModel] = None
    """A RewardGPTModel (posttrain=rm checkpoint) at the training TP size."""
    reward_function: Optional[Callable[[Sequence[str], Sequence[PromptRecord]], List[float]]] = None
    """(decoded responses, their prompts) -> scores, instead of a reward model."""
    reference: Optional[InferenceModel] = None
    """The KL reference; None when posttrain.kl_coef is 0."""
    offload: bool = False
    """Move the frozen models to the CPU between uses (posttrain.offload_frozen_models)."""


@dataclass(frozen=True)
class RolloutSettings:
    cfg: PosttrainConfig
    sampling: SamplingSettings
    stop_ids: tuple
    pad_id: int
    seq_length: int
    micro_batch_size: int
    vocab_size: int
    """The tokenizer's vocabulary (log-probs are taken over it only, token_logps.py)."""


def row_positions(tokens: torch.Tensor) -> torch.Tensor:
    """[rows, seq] position ids 0..seq-1 of right-padded rows (prompt at position 0); the training step's too."""
    return torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand_as(tokens)


@torch.no_grad()
def _per_token(model: torch.nn.Module, tokens: torch.Tensor, micro_batch_size: int, read: Callable) -> torch.Tensor:
    """read(model output, rows, first row's index) over `tokens` [rows, seq] in micro-batches of the training
    step's size: each row then meets the same GEMM shapes as in the training forward pass, whose log-probs must
    equal these."""
    was_training = model.training
    model.eval()
    try:
        parts = []
        for begin in range(0, tokens.shape[0], micro_batch_size):
            rows = tokens[begin : begin + micro_batch_size]
            parts.append(read(model(rows, row_positions(rows), None), rows, begin))
        return torch.cat(parts)
    finally:
        model.train(was_training)


def _with_model(model: InferenceModel, device: torch.device, offload: bool, use: Callable):
    """use(model.model) with the model on `device`, back on the CPU afterwards when offloading."""
    if offload:
        model.model.to(device)
    try:
        return use(model.model)
    finally:
        if offload:
            model.model.to("cpu")


def _rows(records: Sequence[PromptRecord], responses: Sequence[Sequence[int]], seq_length: int, pad_id: int):
    """(tokens [n, seq], action_mask [n, seq], real [n, seq]) of prompt + response rows, right padded."""
    n = len(records)
    tokens = torch.full((n, seq_length), pad_id, dtype=torch.long)
    actions = torch.zeros(n, seq_length, dtype=torch.bool)
    real = torch.zeros(n, seq_length, dtype=torch.bool)
    for row, (record, response) in enumerate(zip(records, responses)):
        prompt = len(record.ids)
        end = prompt + len(response)
        tokens[row, :end] = torch.tensor(list(record.ids) + list(response))
        actions[row, prompt - 1 : end - 1] = True  # position t predicts token t + 1
        real[row, :end] = True
    return tokens, actions, real


def shifted_labels(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """[rows, seq]: the token each position predicts (pad after the last); the training step's labels too."""
    return torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], pad_id)], dim=1)


def _gather(local: torch.Tensor) -> torch.Tensor:
    """The rows of every data-parallel replica, in replica order (a no-op without data parallelism)."""
    dp = parallel_state.get_data_parallel_world_size()
    if dp == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dp)]
    torch.distributed.all_gather(parts, local.contiguous(), group=parallel_state.get_data_parallel_group())
    return torch.cat(parts)


def _row_width(longest: int, seq_length: int, device: torch.device) -> int:
    """The rows' width: the longest prompt + response of the whole batch (every data-parallel replica), rounded up
    to a multiple of 8, at most train.seq_length. Scoring and training then skip the padding of short responses,
    and both see the same shapes (which keeps the first update's ratio exactly 1)."""
    width = torch.tensor([longest], dtype=torch.long, device=device)
    if parallel_state.get_data_parallel_world_size() > 1:
        torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX, group=parallel_state.get_data_parallel_group())
    return min(-(-int(width.item()) // 8) * 8, seq_length)


def _share(rows: int) -> slice:
    dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    per = rows // dp
    return slice(rank * per, (rank + 1) * per)


def generate_responses(
    actor: torch.nn.Module, job, records: Sequence[PromptRecord], settings: RolloutSettings, row_seeds: Sequence[int],
    greedy: bool = False,
):
    """Responses of `actor` (a training chunk, DDP-wrapped or not) to `records`: (token lists, generation-pass
    log-probs, seconds). Each prompt's budget is posttrain.max_new_tokens, capped by train.seq_length; each row
    samples from a generator of its own (`row_seeds`), so a row's response does not depend on the data-parallel
    split of the batch."""
    module = unwrap(actor)
    model = InferenceModel(job=job, model=module, vocab_size=settings.vocab_size, device=next(module.parameters()).device)
    budgets = [min(settings.cfg.max_new_tokens, settings.seq_length - len(r.ids)) for r in records]
    sampling = SamplingSettings(temperature=0.0) if greedy else settings.sampling
    was_training = module.training
    module.eval()
    try:
        out = generate(
            model, [list(r.ids) for r in records], budgets, sampling, settings.stop_ids, return_logprobs=True,
            row_seeds=row_seeds,
        )
    finally:
        module.train(was_training)
    return out.tokens, out.logprobs, out.seconds


def _decoded(tokenizer, responses: Sequence[Sequence[int]], stop_ids: Sequence[int]) -> List[str]:
    stops = set(stop_ids)
    return [tokenizer.detokenize([t for t in ids if t not in stops]) for ids in responses]


def _scores(
    tokens: torch.Tensor, real: torch.Tensor, texts: Sequence[str], records: Sequence[PromptRecord], scorers: Scorers,
    settings: RolloutSettings, device: torch.device,
) -> torch.Tensor:
    """[rows] float32 scores: the reward model's at each row's last real token, or the reward function's."""
    if scorers.reward_function is not None:
        return torch.tensor(scorers.reward_function(texts, records), dtype=torch.float32)

    def read(output, rows, begin):
        return last_real_token_scores(output.float(), real[begin : begin + len(rows)].to(output.device)).cpu()

    return _with_model(
        scorers.reward_model, device, scorers.offload,
        lambda model: _per_token(model, tokens.to(device), settings.micro_batch_size, read),
    ).float()


def collect_rollout(
    index: int, actor: torch.nn.Module, job, tokenizer, records: Sequence[PromptRecord], scorers: Scorers,
    settings: RolloutSettings, seed: int, objective: str,
) -> Rollout:
    """Rollout batch `index`: `records` (every rank passes the whole batch's prompts, each repeated
    samples_per_prompt times consecutively) answered by the actor, scored, and given advantages."""
    cfg = settings.cfg
    device = next(unwrap(actor).parameters()).device
    start = time.perf_counter()
    share = _share(len(records))
    mine = list(records[share])
    seeds = [seed * 1_000_003 + row for row in range(share.start, share.stop)]
    responses, generation_logps, generation_seconds = generate_responses(actor, job, mine, settings, seeds)
    width = _row_width(max(len(r.ids) + len(t) for r, t in zip(mine, responses)), settings.seq_length, device)
    tokens, actions, real = _rows(mine, responses, width, settings.pad_id)

    def logps_of(output, rows, begin):
        return token_logps(output, shifted_labels(rows, settings.pad_id), settings.vocab_size).cpu()

    on_device = tokens.to(device)
    old_logps = _per_token(actor, on_device, settings.micro_batch_size, logps_of).float()
    generated = torch.zeros_like(old_logps)
    for row, values in enumerate(generation_logps):
        generated[row, actions[row]] = torch.tensor(values, dtype=torch.float32)
    ref_logps = None
    if scorers.reference is not None:
        ref_logps = _with_model(
            scorers.reference, device, scorers.offload,
            lambda model: _per_token(model, on_device, settings.micro_batch_size, logps_of),
        ).float()
    values = None
    critic = getattr(unwrap(actor), "critic", None)
    if critic is not None:
        values = _per_token(
            critic, on_device, settings.micro_batch_size, lambda out, rows, begin: out.float().squeeze(-1).cpu()
        )
    texts = _decoded(tokenizer, responses, settings.stop_ids)
    scores = _scores(tokens, real, texts, mine, scorers, settings, device)
    # Every replica's rows, so that every rank computes the same advantages.
    mismatch = (old_logps - generated).abs() * actions
    tokens, actions, old_logps, scores = (_gather(x.to(device)).cpu() for x in (tokens, actions, old_logps, scores))
    mismatch = _gather(mismatch.to(device)).cpu()
    ref_logps = _gather(ref_logps.to(device)).cpu() if ref_logps is not None else None
    values = _gather(values.to(device)).cpu() if values is not None else None
    mask = actions.float()
    metrics = {
        "reward_mean": scores.mean().item(),
        "response_length": mask.sum(dim=1).mean().item(),
        "logp_diff_generation": (mismatch.sum() / mask.sum()).item(),
        "logp_diff_generation_max": mismatch.max().item(),
        "generation_seconds": generation_seconds,
    }
    if ref_logps is not None:
        # Per response, summed over its tokens (k1), then averaged: the KL the policy has drifted from the reference.
        metrics["kl"] = (kl_estimate(old_logps, ref_logps, "k1") * mask).sum(dim=1).mean().item()
    returns = None
    if objective == "grpo":
        advantages = group_advantages(scores, cfg.samples_per_prompt, scale=cfg.scale_group_rewards)[:, None] * mask
    else:
        beta = cfg.kl_coef if ref_logps is not None and cfg.kl_placement == "reward" else 0.0
        reference = ref_logps if ref_logps is not None else old_logps
        rewards = kl_penalised_rewards(scores, old_logps, reference, mask, beta, cfg.kl_estimator)
        critic_values = values if values is not None else torch.zeros_like(old_logps)
        advantages, returns = gae(rewards, critic_values * mask, mask, cfg.gamma, cfg.lam)
        if values is not None:
            metrics["explained_variance"] = explained_variance(values, returns, mask)
            metrics["value_mean"] = masked_mean(values, mask).item()
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
    metrics["rollout_seconds"] = time.perf_counter() - start
    return Rollout(
        index=index, tokens=tokens, action_mask=actions, old_logps=old_logps, advantages=advantages.float(),
        scores=scores, ref_logps=ref_logps, values=values, returns=returns, metrics=metrics,
    )


def heldout_reward(
    actor: torch.nn.Module, job, tokenizer, records: Sequence[PromptRecord], scorers: Scorers, settings: RolloutSettings
) -> float:
    """Mean score of the actor's greedy responses to held-out `records` (split over data-parallel replicas,
    padded to equal shares with repeats that are not counted)."""
    dp = parallel_state.get_data_parallel_world_size()
    per = -(-len(records) // dp)
    padded = list(records) + list(records[: per * dp - len(records)])
    counted = torch.tensor([1.0] * len(records) + [0.0] * (per * dp - len(records)))
    share = _share(len(padded))
    mine = padded[share]
    device = next(unwrap(actor).parameters()).device
    responses, _, _ = generate_responses(actor, job, mine, settings, [0] * len(mine), greedy=True)
    tokens, _, real = _rows(mine, responses, settings.seq_length, settings.pad_id)
    scores = _scores(tokens, real, _decoded(tokenizer, responses, settings.stop_ids), mine, scorers, settings, device)
    scores = _gather(scores.to(device)).cpu()
    return (scores * counted).sum().item() / len(records)
