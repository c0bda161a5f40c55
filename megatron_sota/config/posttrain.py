"""Typed configuration of post-training (SFT, reward model, DPO): the `posttrain` group of conf/.

Plain dataclass and its own checks; the objectives that read it live in megatron_sota/posttrain/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from megatron_sota.config.ranges import at_least, range_problems, within

OBJECTIVES = ("sft", "rm", "dpo")


@dataclass
class PosttrainConfig:
    objective: str = "sft"
    """sft (supervised fine-tuning), rm (reward model) or dpo (direct preference optimisation)."""
    train_files: List[str] = field(default_factory=list)
    """JSONL files of training records (TRL's formats: messages, prompt/completion, prompt/chosen/rejected)."""
    valid_files: List[str] = field(default_factory=list)
    """JSONL files of held-out records, read whole at each validation; none: no validation."""
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


def posttrain_problems(cfg: Optional[PosttrainConfig], cp: int, untied: bool = True) -> list[str]:
    """Every problem of the `posttrain` group (none for pretraining, cfg None); `cp` is parallel.cp, `untied`
    model.untie_embeddings_and_output_weights."""
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
        ]
    )
    return problems
