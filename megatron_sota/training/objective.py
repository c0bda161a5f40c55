"""What a run trains on: its data, its loss, its extra metrics and its hooks, as one plug-in of the trainer.

The base class is pretraining (the data blend, next-token loss) and must stay numerically what it was;
post-training objectives (megatron_sota/posttrain/) subclass it instead of copying the loop.

The contract an objective implements (every hook runs on every rank, in this order):

1. ``prepare(job, inputs) -> JobConfig`` before any process group exists, after the config was checked:
   read and check the objective's own data (errors as MegatronSotaError naming file:line), and return
   the job with the values it derives (e.g. ``train.iters`` from epochs). Nothing is written yet.
2. The model: ``model_class(job)``, the constructor build_model_chunks builds each chunk with (GPTModel's
   arguments; e.g. the reward model); ``rows_per_sample``, the model rows one dataset item becomes (a preference
   pair: 2), which sizes the pipeline's activations and counts tokens/s; ``token_loss``, False where the main
   loss is not a per-token language-model loss (no perplexity is shown); ``fresh_keys(keys)``, those of a
   chunk's state keys the objective initialises itself (a reward head), which a checkpoint.init_from checkpoint
   lacking them leaves at their fresh values; ``model_hook(chunks, config) -> chunks`` on this rank's chunks
   (one per virtual pipeline stage) before DDP wrapping (``chunk.post_process`` tells which chunk holds the
   output layer). Parameters added by either are trained and checkpointed.
3. ``datasets(job, inputs, counts, run_dir) -> (train, valid) | None``: torch map-style Datasets whose
   items are dicts of fixed-shape tensors (every item the same keys and shapes, so the default collation
   stacks them); ``len(train) >= counts.train`` and ``len(valid) >= counts.valid`` (global sample order:
   data/blend.py's GlobalBatchSampler reads sample j of global batch b as index b * global_batch + j, so
   resuming only needs the consumed-sample count). None: pretraining's data blend. Keys the default
   forward step reads: ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` ([seq] each) and optionally
   ``document_ids`` ([seq] ints; attention stays within runs of equal ids, training/step.py).
4. ``before_first_step(state, progress)`` after the weights were loaded and the data iterators started
   (also on resume: ``progress.iteration`` > 0), e.g. DPO's reference log-probs.
5. ``before_step(state, step)`` and ``after_step(state, step)`` around each step's update (PPO's rollouts, a
   held-out evaluation), returning metrics that join the step's; ``param_group_overrides(job)`` for the optimizer.
6. ``forward_step(state) -> ForwardStep``: megatron-core's forward step. Its loss function returns
   ``(loss_sum, count, report)``: ``loss_sum`` a scalar summed over the micro-batch's counted units (tokens,
   pairs), ``count`` their number (int tensor; gradients are divided by the global batch's total count),
   ``report`` {name: float tensor([sum, count])} holding MAIN_METRIC ("lm loss": [loss_sum, count], the
   loss logged as ``loss``) and any of ``metric_names``. Every reported metric is summed over micro-batches
   and DP ranks and shared by every pipeline stage; its value is sum / count over the global batch, in
   StepResult.metrics, metrics.jsonl (its name as key; ``val_<name>`` for validation) and TensorBoard
   (``train/<name>``, ``valid/<name>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Tuple

from megatron.core.models.gpt import GPTModel

from megatron_sota.training.step import ForwardStep, next_token_loss

if TYPE_CHECKING:
    from megatron_sota.checkpointing.manager import Progress
    from megatron_sota.config.job import JobConfig
    from megatron_sota.data.blend import SampleCounts
    from megatron_sota.training.state import CheckedInputs, TrainingState


class Objective:
    """Pretraining: next-token loss over the configured data blend, no extra metrics, no hooks."""

    name: str = "pretrain"
    metric_names: Tuple[str, ...] = ()
    """Names the loss functions may report besides MAIN_METRIC (fixed up front: every pipeline stage sizes
    the shared result by them)."""
    rows_per_sample: int = 1
    """Model rows per dataset item: the micro-batch the pipeline schedule carries is micro_batch_size x this."""
    token_loss: bool = True
    """Whether MAIN_METRIC is a mean next-token loss per token, so that its exp is a perplexity (not so for a
    loss per preference pair)."""

    def prepare(self, job: "JobConfig", inputs: "CheckedInputs") -> "JobConfig":
        return job

    def tokens_per_step(self, job: "JobConfig") -> int:
        """Token positions one training step runs through the model: every row of every sample of the global batch."""
        return job.train.global_batch_size * self.rows_per_sample * job.train.seq_length

    def model_class(self, job: "JobConfig") -> Callable:
        return GPTModel

    def fresh_keys(self, keys: Iterable[str]) -> List[str]:
        return []

    def model_hook(self, chunks: list, config) -> list:
        return chunks

    def datasets(self, job: "JobConfig", inputs: "CheckedInputs", counts: "SampleCounts", run_dir: str) -> Optional[tuple]:
        return None

    def before_first_step(self, state: "TrainingState", progress: "Progress") -> None:
        pass

    def before_step(self, state: "TrainingState", step: int) -> Dict[str, float]:
        """Work the step needs first (PPO's rollouts); the metrics returned join the step's (StepResult.metrics).
        Its time counts in the step's."""
        return {}

    def after_step(self, state: "TrainingState", step: int) -> Dict[str, float]:
        """Work after the step's update (a held-out evaluation); its metrics join the step's as before_step's."""
        return {}

    def param_group_overrides(self, job: "JobConfig") -> Optional[dict]:
        """megatron-core's optimizer config_overrides ({ParamKey: {max_lr, min_lr, ...}}): parameters the objective
        trains with other settings (PPO's critic_lr); None: one setting for all."""
        return None

    def forward_step(self, state: "TrainingState") -> ForwardStep:
        return next_token_loss(state.session.device, state.document_eod)
