"""Checks an ONNX export against transformers on its source: a prefill and cached greedy steps, logits compared at each.

Runs onnxruntime on CPU and transformers' own cached generation (not the export's wrapper); it must not write anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from megatron_sota.conversion.onnx_export import MODEL_FILE, OnnxIO, read_onnx_io

LOGIT_TOLERANCE = 1e-4
"""Largest |ONNX - PyTorch| logit accepted at any step (fp32; measured ~1e-6 on the trained tiny model)."""


@dataclass(frozen=True)
class Verification:
    max_diffs: list[float]
    """max |logit difference| of the prefill (all prompt positions), then of each cached step."""
    onnx_tokens: list[int]
    torch_tokens: list[int]

    @property
    def passed(self) -> bool:
        return max(self.max_diffs) <= LOGIT_TOLERANCE and self.onnx_tokens == self.torch_tokens


def onnx_session(onnx_dir: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the CPU provider's notes on unused initializers say nothing here
    return onnxruntime.InferenceSession(os.path.join(onnx_dir, MODEL_FILE), options, providers=["CPUExecutionProvider"])


def empty_cache(io: OnnxIO, batch: int) -> dict[str, np.ndarray]:
    """The past of a prefill: every past.{i}.key/value with length 0."""
    shape = (batch, io.num_kv_heads, 0, io.head_dim)
    return {name: np.zeros(shape, dtype=io.dtype) for name in io.inputs[3:]}


def onnx_step(session, io: OnnxIO, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: dict) -> tuple[np.ndarray, dict]:
    """One forward of the graph; returns the logits and the past of the next step."""
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}
    outputs = dict(zip(io.outputs, session.run(io.outputs, feeds)))
    present = {name.replace("present.", "past.", 1): outputs[name] for name in io.outputs[1:]}
    return outputs["logits"], present


def verify_onnx(onnx_dir: str, hf_dir: str, prompt_ids: Sequence[int], steps: int = 8) -> Verification:
    """Greedy prefill + `steps` cached steps of one prompt in onnxruntime and in transformers, compared step by step."""
    from transformers import AutoModelForCausalLM, DynamicCache

    io = read_onnx_io(onnx_dir)
    session = onnx_session(onnx_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = np.asarray([list(prompt_ids)], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    past = empty_cache(io, 1)
    cache = DynamicCache(config=model.config)
    diffs, onnx_tokens, torch_tokens = [], [], []
    with torch.no_grad():
        for _ in range(steps + 1):
            onnx_logits, past = onnx_step(session, io, ids, mask, positions, past)
            torch_logits = model(input_ids=torch.from_numpy(ids), cache=cache, use_cache=True).logits.numpy()
            diffs.append(float(np.abs(onnx_logits - torch_logits).max()))
            onnx_tokens.append(int(onnx_logits[0, -1].argmax()))
            torch_tokens.append(int(torch_logits[0, -1].argmax()))
            # both continue with the ONNX token, so one early disagreement does not hide the later steps' numbers
            ids = np.asarray([[onnx_tokens[-1]]], dtype=np.int64)
            positions = positions[:, -1:] + 1
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
    return Verification(diffs, onnx_tokens, torch_tokens)
