"""PPO and GRPO as one trainer objective: rollouts on the actor's chunks, then posttrain.ppo_epochs passes of clipped
updates over each rollout batch, through the same trainer, checkpoints and layouts as pretraining.

It wires prompts, models, rollouts and losses together; it must not generate or score (posttrain/rollout.py), decide
the math (advantages.py, ppo_loss.py) or lay rows out (rollout_buffer.py).

PPO trains actor and critic together: the critic (a reward-model-shaped GPTModel with a value head) is a submodule
of the actor's chunk, so one DDP, one optimizer and one checkpoint hold both, and the loss is the policy loss plus
posttrain.value_loss_coef x the value loss (posttrain.critic_lr gives the critic a parameter group of its own).
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Dict, List, Optional

import torch
from megatron.core.models.gpt import GPTModel

from megatron_sota.checkpointing.contents import unwrap
from megatron_sota.checkpointing.dist_reader import DistCheckpointReader
from megatron_sota.checkpointing.manager import load_model_weights
from megatron_sota.checkpointing.paths import resolve_checkpoint_dir
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.checkpoint_model import load_inference_model
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.posttrain.chat_template import ChatTemplate
from megatron_sota.posttrain.ppo_loss import kl_estimate, policy_loss_terms, value_loss_terms
from megatron_sota.posttrain.prompt_data import read_prompt_files
from megatron_sota.posttrain.reward_functions import check_records, reward_function, score_responses
from megatron_sota.posttrain.reward_head import keys_missing_from_pretrained, reward_model_class
from megatron_sota.posttrain.rollout import (
    RolloutSettings, Scorers, collect_rollout, heldout_reward, row_positions, shifted_labels,
)
from megatron_sota.posttrain.rollout_buffer import (
    Rollout, RolloutSchedule, SampleIndices, load_rollout, rollout_path, save_rollout,
)
from megatron_sota.posttrain.token_logps import token_entropy, token_logps
from megatron_sota.training.objective import Objective
from megatron_sota.training.step import MAIN_METRIC

logger = logging.getLogger(__name__)

CRITIC = "critic"
"""The critic's attribute on the actor's chunk, hence the prefix of its checkpoint keys."""


def actor_critic_class(head_seed: int):
    """GPTModel's constructor with the critic attached: a RewardGPTModel of the same shape (always untied: its
    output layer is the value head), built from the same arguments."""

    def build(*args, **kwargs) -> GPTModel:
        actor = GPTModel(*args, **kwargs)
        untied = {**kwargs, "share_embeddings_and_output_weights": False}
        actor.add_module(CRITIC, reward_model_class(head_seed)(*args, **untied))
        return actor

    return build


def _checkpoint(path: Optional[str], key: str) -> Optional[str]:
    return resolve_checkpoint_dir(path, key) if path else None


class RLObjective(Objective):
    """posttrain.objective=ppo (critic, GAE) or grpo (group-relative advantages, no critic)."""

    token_loss = False  # a clipped surrogate, not a next-token loss

    def __init__(self, cfg: PosttrainConfig):
        self.cfg = cfg
        self.name = cfg.objective
        self.uses_critic = cfg.objective == "ppo"
        names = ["policy_loss", "clip_fraction", "ratio", "approx_kl", "entropy"]
        if self.uses_critic:
            names += ["value_loss", "value_clip_fraction"]
        if cfg.kl_coef > 0 and cfg.kl_placement == "loss":
            names += ["kl_loss"]
        self.metric_names = tuple(names)
        self.train_records: list = []
        self.valid_records: list = []
        self.rollout: Optional[Rollout] = None
        self.scorers: Optional[Scorers] = None
        self.checkpoints: Dict[str, Optional[str]] = {}
        self.heldout_start: Optional[float] = None

    # ---- before any process group
    def prepare(self, job, inputs):
        cfg, t = self.cfg, job.train
        if cfg.kl_coef > 0 and not (cfg.reference_model or job.checkpoint.init_from):
            raise MegatronSotaError(f"posttrain.kl_coef={cfg.kl_coef} needs a reference model: set checkpoint.init_from "
                                    "(the policy training starts from) or posttrain.reference_model")
        init = _checkpoint(job.checkpoint.init_from, "checkpoint.init_from")
        self.checkpoints = {
            "reward": _checkpoint(cfg.reward_model, "posttrain.reward_model"),
            "reference": _checkpoint(cfg.reference_model, "posttrain.reference_model") or init if cfg.kl_coef > 0 else None,
        }
        if self.uses_critic:
            critic = _checkpoint(cfg.critic_model, "posttrain.critic_model")
            self.checkpoints["critic"] = critic or self.checkpoints["reward"] or init
        self._check_checkpoints(job)
        if cfg.reward_function:
            reward_function(cfg.reward_function)  # an unknown name fails here, before anything is built
        limit = t.seq_length - cfg.max_new_tokens
        if limit < 1:
            raise MegatronSotaError(
                f"posttrain.max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in "
                f"train.seq_length={t.seq_length}"
            )
        read = partial(read_prompt_files, template_source=cfg.chat_template, tokenizer=inputs.tokenizer, max_prompt_tokens=limit)
        self.train_records = read(cfg.train_files, key="posttrain.train_files")
        if cfg.valid_files:
            self.valid_records = read(cfg.valid_files, key="posttrain.valid_files")
        if cfg.reward_function:  # every record must carry what the reward reads (an answer, tests)
            check_records(cfg.reward_function, self.train_records, "posttrain.train_files")
            check_records(cfg.reward_function, self.valid_records, "posttrain.valid_files")
        if cfg.rollout_prompts > len(self.train_records):
            raise MegatronSotaError(
                f"posttrain.rollout_prompts={cfg.rollout_prompts} exceeds the {len(self.train_records)} prompts of "
                "posttrain.train_files"
            )
        rows = cfg.rollout_prompts * cfg.samples_per_prompt
        self.schedule = RolloutSchedule(rows, t.global_batch_size, cfg.ppo_epochs, t.seed)
        iters = t.iters
        if iters == 0:
            rollouts = cfg.epochs * len(self.train_records) // cfg.rollout_prompts
            iters = rollouts * self.schedule.steps_per_rollout
            logger.info(
                f"train.iters={iters}: posttrain.epochs={cfg.epochs} x {len(self.train_records)} prompts / "
                f"posttrain.rollout_prompts={cfg.rollout_prompts} = {rollouts} rollout batches of "
                f"{self.schedule.steps_per_rollout} steps"
            )
        template = ChatTemplate.load(cfg.chat_template, inputs.tokenizer)
        end_of_turn = inputs.tokenizer.tokenize(template.end_of_turn)[0]
        self.settings = RolloutSettings(
            cfg=cfg, sampling=SamplingSettings.from_config(job.generation), stop_ids=(end_of_turn, inputs.tokenizer.eod),
            pad_id=inputs.tokenizer.eod, seq_length=t.seq_length, micro_batch_size=t.micro_batch_size,
            vocab_size=inputs.tokenizer.vocab_size,
        )
        return dataclasses.replace(job, train=dataclasses.replace(t, iters=iters, eval_iters=0))

    def _check_checkpoints(self, job) -> None:
        """The reward model must be a reward model; the critic must have the actor's shape (it is built with it)."""
        problems = []
        reward = self.checkpoints.get("reward")
        if reward:
            saved = DistCheckpointReader(reward).job_config()
            if saved.posttrain is None or saved.posttrain.objective != "rm":
                problems.append(f"posttrain.reward_model={reward}: expected a reward-model checkpoint (posttrain=rm), "
                                f"found one trained with posttrain.objective="
                                f"{saved.posttrain.objective if saved.posttrain else 'none (pretraining)'}")
        critic = self.checkpoints.get("critic")
        if critic:
            saved = DistCheckpointReader(critic).job_config().model
            shape = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")
            differ = [
                f"{k} {getattr(saved, k)} (actor {getattr(job.model, k)})"
                for k in shape if getattr(saved, k) != getattr(job.model, k)
            ]
            if differ:
                problems.append(f"the critic starts from {critic}, whose model differs from the actor's: {', '.join(differ)}; "
                                "the critic is built with the actor's shape (set posttrain.critic_model)")
        if problems:
            raise MegatronSotaError("\n".join(problems))

    # ---- the model
    def model_class(self, job):
        return actor_critic_class(job.train.seed) if self.uses_critic else GPTModel

    def fresh_keys(self, keys):
        return [key for key in keys if key.startswith(f"{CRITIC}.")]

    def datasets(self, job, inputs, counts, run_dir):
        self.run_dir, self.job, self.tokenizer = run_dir, job, inputs.tokenizer
        return SampleIndices(counts.train), None

    # ---- hooks
    def before_first_step(self, state, progress):
        device = state.session.device
        cfg = self.cfg
        reward = self.checkpoints.get("reward")
        reference = self.checkpoints.get("reference")
        offload = cfg.offload_frozen_models
        home = torch.device("cpu") if offload else device  # offloaded models wait in CPU memory from the start
        self.scorers = Scorers(
            reward_model=load_inference_model(reward, home, model_class=reward_model_class(0)) if reward else None,
            reference=load_inference_model(reference, home) if reference else None,
            offload=offload,
        )
        if cfg.reward_function:
            function = reward_function(cfg.reward_function)
            self.scorers.reward_function = partial(score_responses, function)
        if self.uses_critic and progress.iteration == 0:
            self._load_critic(state)
        if progress.iteration % self.schedule.steps_per_rollout:
            index = self.schedule.rollout_of_step(progress.iteration + 1)
            self.rollout = load_rollout(rollout_path(self.run_dir, index), index)
        self.heldout_start = self._heldout(state) if progress.iteration == 0 and self.valid_records else None

    def _load_critic(self, state) -> None:
        """The critic's weights from its checkpoint (a reward model's head becomes the value head; a language
        model's leaves a fresh head), then the optimizer's main copies refreshed from the model."""
        (chunk,) = state.models
        critic = getattr(unwrap(chunk), CRITIC)
        load_model_weights([critic], self.checkpoints["critic"], fresh_keys=keys_missing_from_pretrained)
        state.optimizer.reload_model_params()
        logger.info(f"critic initialised from {self.checkpoints['critic']}")

    def _heldout(self, state) -> float:
        (actor,) = state.models
        value = heldout_reward(actor, self.job, self.tokenizer, self.valid_records, self.scorers, self.settings)
        logger.info(f"held-out mean reward {value:.4f} over {len(self.valid_records)} prompts (greedy)")
        return value

    def before_step(self, state, step: int) -> Dict[str, float]:
        """Step `step`'s rollout batch: generated at the first step of each, read back after a resume inside one."""
        index = self.schedule.rollout_of_step(step)
        metrics: Dict[str, float] = {}
        if step == 1 and self.heldout_start is not None:
            metrics["heldout_reward_start"] = self.heldout_start
        if self.rollout is not None and self.rollout.index == index:
            return metrics
        (actor,) = state.models
        records = self._rollout_records(index)
        self.rollout = collect_rollout(
            index, actor, self.job, self.tokenizer, records, self.scorers, self.settings,
            seed=self.job.train.seed * 100_003 + index, objective=self.cfg.objective,
        )
        if torch.distributed.get_rank() == 0:
            save_rollout(rollout_path(self.run_dir, index), self.rollout)
        torch.distributed.barrier()
        m = self.rollout.metrics
        logger.info(
            f"rollout {index}: {self.rollout.rows} responses, mean reward {m['reward_mean']:.4f}, "
            f"mean length {m['response_length']:.1f} tokens, {m['rollout_seconds']:.2f}s "
            f"({m['generation_seconds']:.2f}s generating)"
        )
        return {**metrics, **m}

    def after_step(self, state, step: int) -> Dict[str, float]:
        interval = self.job.train.eval_interval
        if self.valid_records and (step % interval == 0 or step == self.job.train.iters):
            return {"heldout_reward": self._heldout(state)}
        return {}

    def _rollout_records(self, index: int) -> List:
        """The prompts of rollout batch `index`: the next rollout_prompts of a seeded per-epoch order, each
        repeated samples_per_prompt times (a GRPO group's rows are consecutive)."""
        cfg, n = self.cfg, len(self.train_records)
        records, orders = [], {}
        for position in range(index * cfg.rollout_prompts, (index + 1) * cfg.rollout_prompts):
            epoch, within = divmod(position, n)
            if epoch not in orders:
                generator = torch.Generator().manual_seed(self.job.train.seed + epoch)
                orders[epoch] = torch.randperm(n, generator=generator).tolist()
            records += [self.train_records[orders[epoch][within]]] * cfg.samples_per_prompt
        return records

    # ---- the step
    def forward_step(self, state):
        return partial(self._forward_step, state.session.device)

    def _forward_step(self, device: torch.device, data_iterator, model):
        samples = next(data_iterator)["sample"].tolist()
        places = [self.schedule.row(s) for s in samples]
        wrong = [i for i, _ in places if i != self.rollout.index]
        if wrong:
            raise RuntimeError(
                f"samples {samples} belong to rollout batches {wrong}, the current one is {self.rollout.index}"
            )
        rows = self.rollout.select(torch.tensor([row for _, row in places]))
        batch = {key: value.to(device) for key, value in rows.items()}
        tokens = batch["tokens"]
        positions = row_positions(tokens)
        logits = model(tokens, positions, None)
        values = None
        if self.uses_critic:
            values = getattr(unwrap(model), CRITIC)(tokens, positions, None).float().squeeze(-1)
        return logits, partial(self._loss, batch, values)

    def _loss(self, batch: dict, values: Optional[torch.Tensor], logits: torch.Tensor):
        cfg, vocab = self.cfg, self.settings.vocab_size
        mask = batch["action_mask"].float()
        count = mask.sum()
        logps = token_logps(logits, shifted_labels(batch["tokens"], self.settings.pad_id), vocab)
        policy = policy_loss_terms(logps, batch["old_logps"], batch["advantages"], mask, cfg.clip_range)
        loss = policy["loss"]
        report = {
            "policy_loss": policy["loss"].detach(),
            "clip_fraction": policy["clipped"],
            "ratio": policy["ratio"].detach(),
            "approx_kl": policy["approx_kl"].detach(),
            "entropy": (token_entropy(logits.detach(), vocab) * mask).sum(),
        }
        if values is not None:
            value = value_loss_terms(values, batch["values"], batch["returns"], mask, cfg.value_clip)
            loss = loss + cfg.value_loss_coef * value["loss"]
            report["value_loss"], report["value_clip_fraction"] = value["loss"].detach(), value["clipped"]
        if cfg.kl_coef > 0 and cfg.kl_placement == "loss":
            kl = (kl_estimate(logps, batch["ref_logps"], cfg.kl_estimator) * mask).sum()
            loss = loss + cfg.kl_coef * kl
            report["kl_loss"] = kl.detach()
        report = {name: torch.stack([value.float(), count]) for name, value in report.items()}
        report[MAIN_METRIC] = torch.stack([loss.detach(), count])
        return loss, count.to(torch.int), report

    def param_group_overrides(self, job):
        """posttrain.critic_lr: the critic's parameters as a group of their own with that peak LR."""
        if not (self.uses_critic and self.cfg.critic_lr):
            return None
        from megatron.core.optimizer.optimizer_config import ParamKey

        lr = self.cfg.critic_lr
        return {ParamKey(name=f"*{CRITIC}.*"): {"max_lr": lr, "min_lr": lr * job.scheduler.min_lr_ratio}}

