"""Activation memory of one micro-batch on one rank of any layout, measured under fake tensors.

Inside runtime/fake_world.py (rank `rank` of `world_size` fake ranks, tensors on the "cpu" device) one model chunk
of that rank is built as the trainer builds it (model/gpt_builder.py: its layer spec, recompute and sequence
parallelism, megatron-core's eager kernels) under PyTorch's FakeTensorMode, and one micro-batch runs forward and
backward through it under PyTorch's MemTracker (torch.distributed._tools.mem_tracker, as torchtitan's memory
estimator uses it). Fake tensors carry shapes, dtypes and storages but no data, so a sota_175b chunk runs in seconds;
the tracker counts every storage the aten ops create and frees, as a real CPU run would allocate them.

What the trainer adds around the chunk, and how it is stood in for:
- megatron-core's DDP adds each parameter's gradient into its fp32 main-gradient buffer as soon as it is
  accumulated and drops it (a static term, counted by the rehearsal's buffers): a post-accumulate-grad hook drops
  `.grad` here, so only the transient weight gradient counts.
- a pipeline stage after the first receives its input from the previous stage (set_input_tensor, [s/cp/t_sp, b, h],
  requiring grad); a stage before the last receives the gradient of its output. Both are made inside the tracker:
  the received input is held with the micro-batch, the received gradient during its backward.
- the last stage computes the trainer's loss (training/step.py masked_token_loss of the per-token loss).
- Float16Module (bf16 runs) only casts the integer tokens and the fp32 loss: nothing to allocate.

Reported for the chunk: `stored_bytes`, what one micro-batch's forward leaves allocated for its backward (saved
activations, the received input, the chunk's output; weights excluded), and `backward_peak_bytes`, the most the
backward holds on top of that (gradients flowing back, recomputed layers, weight-gradient temporaries).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import torch

from megatron_sota.config.job import JobConfig

GiB = 2**30


@dataclass(frozen=True)
class ActivationMeasure:
    """One micro-batch through one model chunk of one rank, under fake tensors."""

    rank: int
    world_size: int
    pipeline_rank: int
    vp_stage: int
    """Which of the rank's model chunks ran (0 without virtual pipeline stages)."""
    stored_bytes: int
    """Allocated after the forward (and the loss on the last stage), weights excluded: what waits for the backward."""
    backward_peak_bytes: int
    """The most the chunk's backward allocated on top of `stored_bytes`."""
    forward_peak_bytes: int
    """The most the forward held at once, weights excluded (the last stage's loss computation can top the backward)."""
    persistent_bytes: int
    """megatron-core's global memory buffer, made by the first forward and kept (sequence parallelism's gathered
    input): once per rank, whatever the micro-batches in flight; excluded from the other figures."""
    weight_bytes: int
    """The chunk's parameters (module tensors, before any DDP buffer): for context."""
    peak_module: str
    """Where the backward peak happened: the innermost module running backward at that moment."""
    seconds: float

    @property
    def peak_bytes(self) -> int:
        """The micro-batch's own peak on top of the weights: the backward's or, where higher, the forward's."""
        return max(self.stored_bytes + self.backward_peak_bytes, self.forward_peak_bytes)

    @property
    def phase(self) -> str:
        return "backward" if self.stored_bytes + self.backward_peak_bytes >= self.forward_peak_bytes else "forward"

    def describe(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size} (pipeline stage {self.pipeline_rank}, chunk {self.vp_stage}): "
            f"stored {self.stored_bytes / GiB:.2f} GiB, backward +{self.backward_peak_bytes / GiB:.2f} GiB "
            f"(peak in {self.peak_module}), forward peak {self.forward_peak_bytes / GiB:.2f} GiB, "
            f"persistent buffer {self.persistent_bytes / GiB:.2f} GiB, weights {self.weight_bytes / GiB:.2f} GiB; "
            f"{self.seconds:.1f} s"
        )


def default_vp_stage(pipeline_rank: int, pp: int, vpp: int) -> int:
    """The chunk that weighs most on its rank: the embedding's on the first stage, the output layer's on the last."""
    return vpp - 1 if pipeline_rank == pp - 1 else 0


def measure_activations(job: JobConfig, world_size: int, rank: int, vp_stage: Optional[int] = None) -> ActivationMeasure:
    """Runs one micro-batch of `job` through chunk `vp_stage` (default_vp_stage when None) of global rank `rank`
    of `world_size` under fake tensors and the memory tracker. Makes its own fake world: call it outside one."""
    from torch.distributed._tools.mem_tracker import MemTracker

    start = time.perf_counter()
    with rank_chunk(job, world_size, rank, vp_stage) as built, warnings.catch_warnings():
        # The tracker's own gradient hook runs after ours and finds `.grad` already dropped.
        warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass")
        chunk = built.chunk
        weights = sum(param.numel() * param.element_size() for param in chunk.parameters())
        # A first micro-batch makes what the run keeps from then on (megatron-core's global buffer for the
        # sequence-parallel all-gather, the RoPE table its lru_cache holds): what it leaves is `persistent`.
        # The second is the one measured, by the same tracker (which knows those storages already: it counts a
        # storage it has not seen when an op returns a view of it).
        tracker = MemTracker()
        tracker.track_external(chunk)
        with tracker:
            base = _total(tracker, "current")
            backward_micro_batch(*forward_micro_batch(built))
            persistent = _total(tracker, "current") - base
        tracker.reset_mod_stats()  # its module statistics allow one forward per module
        # Each entry starts the tracker's peak from what is held then: the forward's, then the backward's own.
        with tracker:
            base = _total(tracker, "current")
            output, grad_shape = forward_micro_batch(built)
            stored = _total(tracker, "current") - base
            forward = _total(tracker, "peak") - base
        with tracker:
            backward_micro_batch(output, grad_shape)
            del output
            backward = _total(tracker, "peak") - base - stored
        where = _peak_module(tracker, base + stored + backward)
    return ActivationMeasure(
        rank, world_size, built.pipeline_rank, built.vp_stage, stored, backward, forward, persistent, weights, where,
        time.perf_counter() - start,
    )


@dataclass(frozen=True)
class BuiltChunk:
    job: JobConfig
    config: Any
    """megatron-core's TransformerConfig of the run."""
    chunk: Any
    """The GPTModel of this rank's chunk `vp_stage`; its parameters drop their gradients once accumulated."""
    pipeline_rank: int
    vp_stage: int


@contextlib.contextmanager
def rank_chunk(
    job: JobConfig, world_size: int, rank: int, vp_stage: Optional[int] = None, fake: bool = True
) -> Iterator[BuiltChunk]:
    """One model chunk of global rank `rank` as the trainer builds it, inside a fake world of `world_size` ranks
    (and, with `fake`, PyTorch's FakeTensorMode: no memory is used; without, real CPU tensors, for a small model)."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
    from megatron.core.tensor_parallel.random import initialize_rng_tracker
    from torch._subclasses.fake_tensor import FakeTensorMode

    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.model.kernel_choice import KernelChoice
    from megatron_sota.runtime.fake_world import fake_world

    p, t = job.parallel, job.train
    vpp = p.vpp if p.vpp and p.vpp > 1 else 1
    # The eager kernels (all fusions off): the path planning/memory.py describes and was checked against on CPU.
    # A CUDA run picks fused SwiGLU, cross-entropy and a compiled RMSNorm by default (model/kernel_choice.py),
    # which keep no more than these; Transformer Engine cannot be imported here.
    kernels = KernelChoice()
    with contextlib.ExitStack() as stack:
        stack.enter_context(fake_world(world_size, rank, device="cpu"))
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=p.tp,
            pipeline_model_parallel_size=p.pp,
            virtual_pipeline_model_parallel_size=vpp if vpp > 1 else None,
            context_parallel_size=p.cp,
        )
        stack.callback(initialize_rng_tracker, force_reset=True)  # the training tracker again, for a later run
        stack.callback(parallel_state.destroy_model_parallel)
        # megatron-core's inference tracker: fork() does nothing. The training tracker compares the CPU RNG state
        # after each fork (sequence-parallel dropout regions) with .item(), which fake tensors cannot answer; which
        # stream dropout draws from allocates nothing.
        model_parallel_cuda_manual_seed(t.seed, inference_rng_tracker=True, force_reset_rng=True)
        pipeline_rank = parallel_state.get_pipeline_model_parallel_rank()
        stage = default_vp_stage(pipeline_rank, p.pp, vpp) if vp_stage is None else vp_stage
        if not 0 <= stage < vpp:
            raise ValueError(f"vp_stage {stage} is outside the rank's {vpp} model chunks")
        config = build_transformer_config(job.model, p, job.precision, t.recompute, "cuda", False, kernels)
        vocab = padded_vocab_size(job.model.vocab_size, job.model.make_vocab_size_divisible_by, p.tp)
        if fake:
            stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        chunk = build_model_chunks(job.model, config, vocab, t.seq_length, t.seed, False, kernels)[stage]
        for param in chunk.parameters():
            # megatron-core DDP: the gradient goes into the fp32 main-gradient buffer and is dropped.
            param.register_post_accumulate_grad_hook(_drop_grad)
        yield BuiltChunk(job, config, chunk, pipeline_rank, stage)


def forward_micro_batch(built: BuiltChunk) -> Tuple[torch.Tensor, Optional[torch.Size]]:
    """One micro-batch forward as the schedule runs it: (the tensor its backward starts from, None on the last
    stage or else the shape of the gradient the next stage sends back)."""
    from megatron_sota.training.step import masked_token_loss

    job, chunk = built.job, built.chunk
    p, t = job.parallel, job.train
    seq, batch = t.seq_length // p.cp, t.micro_batch_size
    tokens = torch.zeros(batch, seq, dtype=torch.long)
    positions = torch.arange(seq).unsqueeze(0).expand(batch, seq)
    if not chunk.pre_process:
        received = torch.zeros(seq // (p.tp if p.sp else 1), batch, job.model.hidden_size, dtype=built.config.params_dtype)
        chunk.set_input_tensor(received.requires_grad_())
    output = chunk(tokens, positions, None, labels=tokens if chunk.post_process else None)
    if chunk.post_process:
        return masked_token_loss(torch.ones(batch, seq), output)[0], None
    return output, output.shape


def backward_micro_batch(output: torch.Tensor, grad_shape: Optional[torch.Size]) -> None:
    """The micro-batch's backward, from its loss or from the gradient received for its output."""
    grad = None if grad_shape is None else torch.zeros(grad_shape, dtype=output.dtype)
    output.backward(grad)


def _drop_grad(param: torch.Tensor) -> None:
    param.grad = None


def _total(tracker, kind: str) -> int:
    snapshot = tracker.get_tracker_snapshot(kind)
    return sum(dev["Total"] for dev in snapshot.values())


def _peak_totals(stats) -> list:
    """The totals of a module's backward-peak snapshots (MemTracker's _ModMemStats; state keys are str enums)."""
    return [
        sum(dev["Total"] for dev in snap.values())
        for state, snaps in stats.snapshots.items()
        if state == "Peak-Backward"
        for snap in snaps
        if snap
    ]


def _peak_module(tracker, peak: int) -> str:
    """The longest module name whose backward saw the peak (the innermost one running then); "?" where the
    tracker's module hooks lose track (megatron-core's full recompute reruns layers inside an autograd Function)."""
    names = [stats.mod_fqn for stats in tracker.memory_tracking.values() if peak in _peak_totals(stats)]
    return max(names, key=lambda name: name.count("."), default="?")
