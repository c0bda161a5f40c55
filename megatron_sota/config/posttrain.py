"""Typed configuration of post-training (SFT, reward model, DPO, PPO, GRPO): the `posttrain` group of conf/.

Plain dataclass and its own checks; the objectives that read it live in megatron_sota/posttrain/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from megatron_sota.config.ranges import above, at_least, range_problems, within

OBJECTIVES = ("sft", "rm", "dpo", "ppo", "grpo")
RL_OBJECTIVES = ("ppo", "grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_PLACEMENTS = ("reward", "loss")


@dataclass
class PosttrainConfig:
    objective: str = "sft"
    """sft (supervised fine-tuning), rm (reward model), dpo (direct preference optimisation), ppo or grpo."""
    train_files: List[str] = field(default_factory=list)
    """JSONL files of training records (TRL's formats: messages, prompt/completion, prompt/chosen/rejected;
    ppo/grpo: prompts, with an `answer` or `tests` for a reward function)."""
    valid_files: List[str] = field(default_factory=list)
    """JSONL files of held-out records, read whole at each validation; none: no validation (ppo/grpo: held-out
    prompts answered greedily, their mean reward logged as heldout_reward every train.eval_interval steps)."""
    chat_template: Optional[str] = None
    """A Jinja chat template: a file, or a directory with tokenizer_config.json; null: the shipped default."""
    chat_template_text: Optional[str] = None
    """Recorded by the run, not set by hand (a value given is replaced): the text of the template chat_template
    named when the run started. config.yaml and checkpoints keep it, so an HF export writes the template the
    model was trained with into tokenizer_config.json even after the file moved or the default changed."""
    assistant_only_loss: bool = True
    """SFT: loss on assistant tokens (and their end-of-turn) only; false: on every token of the conversation."""
    packing: bool = True
    """SFT: best-fit packing of conversations into rows of train.seq_length, attention and positions kept per
    conversation; false: one conversation per row, padded."""
    epochs: int = 2
    """Passes over train_files; train.iters=0 derives the steps as epochs x rows / train.global_batch_size."""
    beta: float = 0.1
    """DPO: strength of the implicit KL penalty (TRL's default 0.1)."""
    label_smoothing: float = 0.0
    """DPO: probability that a preference label is flipped (conservative DPO); 0 is the plain sigmoid loss."""
    sft_weight: float = 0.0
    """DPO: weight of an added SFT (chosen completion NLL) term; 0 leaves it out."""
    center_rewards_coefficient: float = 0.0
    """RM: weight of the mean (r_chosen + r_rejected)^2 term that keeps rewards centred; 0 leaves it out."""
    # ---- PPO and GRPO (posttrain/rl.py); defaults are the spec's PPO values
    reward_model: Optional[str] = None
    """PPO/GRPO: a reward-model checkpoint (posttrain=rm) scoring each response at its last token."""
    reward_function: Optional[str] = None
    """PPO/GRPO: a verifiable reward instead (posttrain/reward_functions.py: exact_match, unit_tests)."""
    reference_model: Optional[str] = None
    """PPO/GRPO: the KL reference's checkpoint; null: checkpoint.init_from (the policy training starts from)."""
    critic_model: Optional[str] = None
    """PPO: the checkpoint the critic starts from; null: reward_model (its head becomes the value head), else
    checkpoint.init_from with a fresh value head."""
    max_new_tokens: int = 128
    """PPO/GRPO: response budget; a prompt may take train.seq_length - max_new_tokens tokens."""
    rollout_prompts: int = 32
    """PPO/GRPO: prompts per rollout batch (rows: rollout_prompts x samples_per_prompt)."""
    samples_per_prompt: int = 1
    """Responses sampled per prompt (GRPO's group size, >= 2)."""
    ppo_epochs: int = 4
    """Passes over each rollout batch, train.global_batch_size rows per optimizer step."""
    kl_coef: float = 0.1
    """Weight of the KL to the reference model; 0 turns it off (no reference model is loaded)."""
    kl_estimator: str = "k1"
    """k1 (log-ratio), k2 (half its square) or k3 (Schulman's unbiased, positive estimator)."""
    kl_placement: str = "reward"
    """reward: -kl_coef x KL per token in the reward (PPO, InstructGPT); loss: kl_coef x KL added to the loss (GRPO)."""
    clip_range: float = 0.2
    """PPO/GRPO: the policy ratio's clip, 1 +- clip_range."""
    value_clip: Optional[float] = 0.2
    """PPO: the value's clip around the rollout's value; null: unclipped."""
    value_loss_coef: float = 0.1
    """PPO: weight of the value loss in the loss actor and critic share."""
    critic_lr: Optional[float] = None
    """PPO: the critic's own peak learning rate (its parameter group's; the schedule's shape is shared); null:
    optimizer.lr, the value loss weighted by value_loss_coef."""
    gamma: float = 1.0
    """PPO: GAE's discount."""
    lam: float = 0.95
    """PPO: GAE's lambda."""
    whiten_advantages: bool = True
    """PPO: advantages whitened over the whole rollout batch (all data-parallel ranks)."""
    scale_group_rewards: bool = True
    """GRPO: advantages divided by their group's standard deviation; false: only the group mean removed."""
    offload_frozen_models: bool = False
    """PPO/GRPO: the reference and reward models wait in CPU memory between rollouts."""


def posttrain_problems(
    cfg: Optional[PosttrainConfig], cp: int, untied: bool = True, pp: int = 1, sp: bool = False, num_workers: int = 0
) -> list[str]:
    """Every problem of the `posttrain` group (none for pretraining, cfg None); `cp`, `pp` and `sp` are
    parallel.cp/pp/sp, `untied` model.untie_embeddings_and_output_weights, `num_workers` data.num_workers."""
    if cfg is None:
        return []
    problems = []
    if cfg.objective == "rm" and not untied:
        problems.append(
            "model.untie_embeddings_and_output_weights=false: a reward model (posttrain=rm) replaces the output "
            "layer by a scalar head, so its embeddings must be untied (set it to true; conf/posttrain/rm.yaml does)"
        )
    if cfg.objective not in OBJECTIVES:
        problems.append(f"posttrain.objective must be one of {', '.join(OBJECTIVES)}, got '{cfg.objective}'")
    if cfg.objective in RL_OBJECTIVES:
        problems += _rl_problems(cfg, pp, sp, num_workers)
    if not cfg.train_files:
        problems.append("posttrain.train_files is empty: give JSONL files (posttrain.train_files=[data/sft.jsonl])")
    if cp > 1:
        problems.append(
            f"parallel.cp={cp}: post-training objectives do not split their rows over context-parallel ranks yet "
            "(set parallel.cp=1)"
        )
    problems += range_problems(
        [
            ("posttrain.epochs", cfg.epochs, at_least(1)),
            ("posttrain.beta", cfg.beta, within(0, float("inf"), low_open=True)),
            ("posttrain.label_smoothing", cfg.label_smoothing, within(0, 0.5, high_open=True)),
            ("posttrain.sft_weight", cfg.sft_weight, at_least(0)),
            ("posttrain.center_rewards_coefficient", cfg.center_rewards_coefficient, at_least(0)),
            ("posttrain.max_new_tokens", cfg.max_new_tokens, at_least(1)),
            ("posttrain.rollout_prompts", cfg.rollout_prompts, at_least(1)),
            ("posttrain.samples_per_prompt", cfg.samples_per_prompt, at_least(1)),
            ("posttrain.ppo_epochs", cfg.ppo_epochs, at_least(1)),
            ("posttrain.kl_coef", cfg.kl_coef, at_least(0)),
            ("posttrain.clip_range", cfg.clip_range, within(0, 1, low_open=True, high_open=True)),
            ("posttrain.value_clip", cfg.value_clip, above(0, nullable=True)),
            ("posttrain.value_loss_coef", cfg.value_loss_coef, at_least(0)),
            ("posttrain.critic_lr", cfg.critic_lr, above(0, nullable=True)),
            ("posttrain.gamma", cfg.gamma, within(0, 1)),
            ("posttrain.lam", cfg.lam, within(0, 1)),
        ]
    )
    return problems


def _rl_problems(cfg: PosttrainConfig, pp: int, sp: bool, num_workers: int) -> list[str]:
    problems = []
    if pp > 1:
        problems.append(
            f"parallel.pp={pp}: {cfg.objective} rollouts run the actor's chunk with a KV cache, which needs the whole "
            "model on each rank (set parallel.pp=1; pipeline-parallel rollouts are not built yet)"
        )
    if sp:
        problems.append(f"parallel.sp=true: {cfg.objective} rollouts decode one token at a time, which sequence "
                        "parallelism cannot split (set parallel.sp=false)")
    if num_workers:
        problems.append(f"data.num_workers={num_workers}: {cfg.objective} reads its rows from the rollout batch in "
                        "the training process (set data.num_workers=0)")
    if (cfg.reward_model is None) == (cfg.reward_function is None):
        problems.append(
            f"posttrain.objective={cfg.objective} needs exactly one reward: posttrain.reward_model (a reward-model "
            "checkpoint) or posttrain.reward_function (exact_match, unit_tests); found "
            + ("both" if cfg.reward_model else "neither")
        )
    if cfg.kl_estimator not in KL_ESTIMATORS:
        problems.append(f"posttrain.kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got '{cfg.kl_estimator}'")
    if cfg.kl_placement not in KL_PLACEMENTS:
        problems.append(f"posttrain.kl_placement must be one of {', '.join(KL_PLACEMENTS)}, got '{cfg.kl_placement}'")
    if cfg.objective == "grpo" and cfg.samples_per_prompt < 2:
        problems.append(
            f"posttrain.samples_per_prompt={cfg.samples_per_prompt}: GRPO compares responses within a group of "
            "samples of one prompt, so it needs at least 2 (conf/posttrain/grpo.yaml sets 8)"
        )
    return problems
