"""The transformers side of the side-by-side benchmark: `LlamaForCausalLM` trained the way its users train it.

The model computes what the job's model computes (conversion.hf_config's LlamaConfig of the same preset and padded
vocabulary), in the job's parameter dtype, with PyTorch's SDPA attention. Each step runs the same micro-batches of
random tokens (forward with labels, backward of the loss divided by the micro-batch count), clips the gradient norm at
the job's clip_grad, steps `torch.optim.AdamW` with the job's hyperparameters and the trainer's implementation
(`fused=True` with kernels.fused_adam, what transformers' Trainer uses by default with torch >= 2.8,
`adamw_torch_fused`, and what the GPU baseline script uses; otherwise torch's own choice, as the trainer's) and sets
the gradients to None.

It runs in a process of its own (`spawn`), so that neither side's process state (the CPU backend's function mode, a
CUDA allocator) touches the other's; the driver (perf/side_by_side.py) asks it for a number of timed steps at a time.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass(frozen=True)
class HFSpec:
    """Everything the transformers process needs: plain values, picklable."""

    hf_config: dict
    """conversion.hf_config.hf_config_from_model's config.json of the job's model."""
    device: str
    dtype: str
    """torch dtype name of the parameters: float32, bfloat16 or float16."""
    micro_batch_size: int
    num_microbatches: int
    seq_length: int
    lr: float
    betas: tuple
    eps: float
    weight_decay: float
    clip_grad: float
    fused_adam: bool
    """torch's fused AdamW kernel, else torch's own choice: the trainer's (kernels.fused_adam)."""
    seed: int
    threads: int
    """torch.get_num_threads() of the driving process, so both sides use the same cores."""


class HFTrainer:
    """One LlamaForCausalLM and its AdamW; `step()` is one global batch."""

    def __init__(self, spec: HFSpec):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        self.spec = spec
        self.device = torch.device(spec.device)
        fields = {k: v for k, v in spec.hf_config.items() if k not in ("architectures", "torch_dtype", "dtype")}
        config = LlamaConfig(**fields, attn_implementation="sdpa")
        dtype = getattr(torch, spec.dtype)
        self.model = LlamaForCausalLM(config).to(device=self.device, dtype=dtype).train()
        implementation = {"fused": True} if spec.fused_adam else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps,
                                           weight_decay=spec.weight_decay, **implementation)
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.vocab = config.vocab_size

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> float:
        """One global batch; returns the mean loss over its micro-batches."""
        s = self.spec
        total = 0.0
        for _ in range(s.num_microbatches):
            tokens = torch.randint(0, self.vocab, (s.micro_batch_size, s.seq_length), generator=self.generator)
            tokens = tokens.to(self.device)
            loss = self.model(input_ids=tokens, labels=tokens).loss
            (loss / s.num_microbatches).backward()
            total += loss.detach()
        if s.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total) / s.num_microbatches

    def timed_steps(self, steps: int) -> List[float]:
        """Wall seconds of each of `steps` steps, the device synchronised around each."""
        times = []
        for _ in range(steps):
            self._sync()
            start = time.perf_counter()
            self.step()
            self._sync()
            times.append(time.perf_counter() - start)
        return times


def _serve(spec: HFSpec, conn) -> None:
    """The transformers process: builds the model, then answers each request of n steps with their times."""
    try:
        trainer = HFTrainer(spec)
        conn.send(("ready", None))
        while True:
            steps = conn.recv()
            if steps is None:
                return
            conn.send(("times", trainer.timed_steps(steps)))
    except Exception as err:  # reported to the driver, which raises it with the process's message
        conn.send(("error", f"{type(err).__name__}: {err}"))


class HFProcess:
    """The transformers trainer in a spawned process; `run(n)` times n steps there while this process waits."""

    def __init__(self, spec: HFSpec):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(spec, child), daemon=True)
        self._process.start()
        self._receive("ready")

    def _receive(self, expected: str):
        kind, value = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"the transformers baseline failed: {value}")
        assert kind == expected, (kind, expected)
        return value

    def run(self, steps: int) -> List[float]:
        self._conn.send(steps)
        return self._receive("times")

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()

    def __enter__(self) -> "HFProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spec_for(job, padded_vocab: int, device: torch.device, dtype: torch.dtype, num_microbatches: int,
             fused_adam: bool, threads: Optional[int] = None) -> HFSpec:
    """The transformers side of `job`'s benchmark: same model, vocabulary, batch, dtype and optimizer settings."""
    from megatron_sota.conversion.hf_config import TORCH_DTYPE_NAMES, hf_config_from_model

    dtype_name = str(dtype).replace("torch.", "")
    precision = {name: key for key, name in TORCH_DTYPE_NAMES.items()}[dtype_name]
    config = hf_config_from_model(job.model, padded_vocab, precision, {})
    o, t = job.optimizer, job.train
    return HFSpec(
        hf_config=config, device=str(device), dtype=dtype_name, micro_batch_size=t.micro_batch_size,
        num_microbatches=num_microbatches, seq_length=t.seq_length, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
        weight_decay=o.weight_decay, clip_grad=o.clip_grad, fused_adam=fused_adam, seed=t.seed,
        threads=threads if threads is not None else torch.get_num_threads(),
    )
