"""lm-evaluation-harness's model "megatron_sota": a megatron_sota checkpoint loaded for inference, at any TP.

It answers lm-eval's three request types with our scorer (PipelineScorer) and generation (inference.generate); it
must not change how lm-eval builds requests or metrics. Under torchrun every rank is one TP shard of one model and
runs every request: lm-eval sees a single process (rank 0 of 1) and returns results on LOCAL_RANK 0 only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from megatron_sota.errors import MegatronSotaError

log = logging.getLogger(__name__)

DEFAULT_MICRO_BATCH_SIZE = 8
DEFAULT_MAX_GEN_TOKS = 256
"""New tokens a generation request may take when its task names no max_gen_toks (lm-eval's hf default)."""

Pair = Tuple[List[int], List[int]]


def _session_device(device: Optional[str]) -> str:
    """lm-eval's --device (None, cpu, cuda, cuda:N) as runtime.device; each rank takes the GPU of its LOCAL_RANK."""
    if device is None:
        return "auto"
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda", "auto"):
        raise MegatronSotaError(f"model 'megatron_sota': device: expected cpu, cuda or cuda:N, found {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise MegatronSotaError(f"model 'megatron_sota': device: lm-eval asks for {device!r} (its --device defaults to cuda:0) "
                                "but torch sees no CUDA device: pass --device cpu")
    return kind


def _micro_batch_size(micro_batch_size, batch_size) -> int:
    """model_args' micro_batch_size, else lm-eval's --batch_size when it is a number (not 'auto'), else 8."""
    if micro_batch_size is None and batch_size is not None and str(batch_size).isdigit():
        micro_batch_size = int(batch_size)
    if micro_batch_size is None:
        return DEFAULT_MICRO_BATCH_SIZE
    if not isinstance(micro_batch_size, int) or micro_batch_size < 1:
        raise MegatronSotaError(f"model_args micro_batch_size: expected an integer >= 1, found {micro_batch_size!r}")
    return micro_batch_size


@register_model("megatron_sota")
class MegatronSotaLM(LM):
    """`--model megatron_sota --model_args load=<checkpoint>[,micro_batch_size=8][,max_length=N][,max_gen_toks=256]
    [,dtype=fp32|bf16|fp16][,seed=1234]`. One model per process: constructing another closes this one."""

    _open: Optional["MegatronSotaLM"] = None

    def __init__(
        self,
        load: Optional[str] = None,
        micro_batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        dtype: Optional[str] = None,
        seed: int = 1234,
        batch_size=None,
        max_batch_size=None,  # lm-eval passes it to every model; a fixed micro-batch size leaves nothing to cap
        device: Optional[str] = None,
    ) -> None:
        super().__init__()
        from megatron_sota.data.tokenizer import build_configured_tokenizer
        from megatron_sota.evaluation.eval_models import from_inference_model
        from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
        from megatron_sota.runtime.launch_env import read_launch_env
        from megatron_sota.runtime.session import distributed_session

        if not load:
            raise MegatronSotaError("model 'megatron_sota': model_args load: expected a checkpoint directory (load=<dir>), found none")
        if not isinstance(max_gen_toks, int) or max_gen_toks < 1:
            raise MegatronSotaError(f"model_args max_gen_toks: expected an integer >= 1, found {max_gen_toks!r}")
        mbs = _micro_batch_size(micro_batch_size, batch_size)
        if MegatronSotaLM._open is not None:  # megatron-core's parallel state is per process
            MegatronSotaLM._open.close()
        env = read_launch_env()
        self._stack = contextlib.ExitStack()
        session = self._stack.enter_context(distributed_session(inference_parallel(env.world_size), _session_device(device), seed=seed, env=env))
        MegatronSotaLM._open = self
        atexit.register(self._close_at_exit)
        self.model = load_inference_model(load, session.device, dtype or ("fp32" if session.is_cpu else None))
        self.tokenizer = build_configured_tokenizer(self.model.job.tokenizer, self.model.job.model.vocab_size)
        if type(self.tokenizer).__name__ == "NullTokenizer":
            raise MegatronSotaError(f"{load}: the checkpoint's run names no text tokenizer (tokenizer.type), so lm-eval's text requests cannot be encoded")
        self.scorer = from_inference_model(self.model, self.tokenizer, mbs).scorer
        self.max_length = self.scorer.max_length if max_length is None else min(int(max_length), self.scorer.max_length)
        self.max_gen_toks = max_gen_toks
        self.micro_batch_size = mbs
        self.seed = seed
        self.checkpoint = load
        self.tensor_parallel = env.world_size
        self._show_progress = env.local_rank == 0
        self._device = session.device
        self._served = None
        self._chat_stop: List[str] = []
        """End-of-turn text that ends a generation once prompts are chat-formatted (apply_chat_template)."""

    # ---- lifetime ----

    def close(self) -> None:
        """Tears down the model's process groups (after a barrier with the other TP ranks); idempotent."""
        self._exit()

    def __enter__(self) -> "MegatronSotaLM":
        return self

    def __exit__(self, *exc) -> None:
        self._exit(*exc)

    def _close_at_exit(self) -> None:
        # At interpreter exit another rank may have failed: skip the closing barrier (the error path of distributed_session).
        self._exit(RuntimeError, RuntimeError("interpreter exit"), None)

    def _exit(self, *exc) -> None:
        stack, self._stack = self._stack, None
        if MegatronSotaLM._open is self:
            MegatronSotaLM._open = None
        if stack is not None:
            stack.__exit__(*(exc or (None, None, None)))

    # ---- chat (lm-eval's --apply_chat_template) ----

    @property
    def tokenizer_name(self) -> str:
        """Fingerprints lm-eval's request caches of chat-formatted prompts."""
        return f"megatron_sota:{self.checkpoint}"

    def chat_template(self, chat_template=False) -> str:
        return self._served_template().template.text

    def apply_chat_template(self, chat_history: List[Dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation rendered with the checkpoint's template (the server's: its post-training template, else the
        shipped ChatML one, whose end-of-turn text then also ends generations)."""
        served = self._served_template()
        self._chat_stop = list(served.stop)
        return served.template.render(chat_history, add_generation_prompt=add_generation_prompt, where="lm-eval's chat history")

    def _served_template(self):
        from megatron_sota.serving.chat import served_template

        if self._served is None:
            self._served = served_template(self.model.job, self.tokenizer)
        return self._served

    def get_model_info(self) -> dict:
        """Recorded in lm-eval's results['config']."""
        return {"checkpoint": self.checkpoint, "tensor_parallel": self.tensor_parallel, "micro_batch_size": self.micro_batch_size, "max_length": self.max_length}

    # ---- scoring ----

    def _encode(self, context: str, continuation: str) -> Pair:
        from megatron_sota.evaluation.runner import encode_pair

        pair = encode_pair(self.tokenizer, context, continuation)  # lm-eval's split: trailing whitespace moves over
        if not pair[1]:
            raise MegatronSotaError(f"a continuation tokenizes to no tokens: context {context[-40:]!r}, continuation {continuation!r}")
        return pair

    def _score_pairs(self, pairs: Sequence[Pair], desc: str) -> List[Tuple[float, bool]]:
        """(sum of the continuation's log-probs, whether greedy decoding gives the continuation) per (context, continuation)."""
        from megatron_sota.evaluation.runner import score_pairs

        with tqdm(total=len(pairs), desc=desc, disable=not self._show_progress) as bar:
            return score_pairs(self.scorer, pairs, bar.update, self.max_length)

    def loglikelihood(self, requests) -> List[Tuple[float, bool]]:
        results = self._score_pairs([self._encode(*r.args) for r in requests], "megatron_sota loglikelihood")
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests) -> List[float]:
        """Each document scored whole in lm-eval's windows (max_length tokens each, every token once, after the
        end-of-document token our documents follow in training)."""
        pairs, owners = [], []
        for index, request in enumerate(requests):
            tokens = self.tokenizer.tokenize(request.args[0])
            windows = get_rolling_token_windows(token_list=tokens, prefix_token=self.tokenizer.eod, max_seq_len=self.max_length, context_len=1)
            for window in map(make_disjoint_window, windows):
                pairs.append(window)
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._score_pairs(pairs, "megatron_sota loglikelihood_rolling")):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ---- generation ----

    def generate_until(self, requests) -> List[str]:
        """Requests grouped by their gen_kwargs; each group generated in batches of micro_batch_size, a row ending at
        the end-of-document token, a stop string (cut off) or max_gen_toks."""
        groups: Dict[str, List[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        out: List[Optional[str]] = [None] * len(requests)
        with tqdm(total=len(requests), desc="megatron_sota generate_until", disable=not self._show_progress) as bar:
            for indices in groups.values():
                settings, until, budget = self._generation_settings(requests[indices[0]].args[1])
                room = self.max_length - budget
                if room < 1:
                    raise MegatronSotaError(f"max_gen_toks={budget} leaves no room for a prompt in max_length={self.max_length}")
                for begin in range(0, len(indices), self.micro_batch_size):
                    chunk = indices[begin : begin + self.micro_batch_size]
                    prompts = [self.tokenizer.tokenize(requests[i].args[0])[-room:] or [self.tokenizer.eod] for i in chunk]
                    for i, text in zip(chunk, self._generate(prompts, budget, settings, until, chunk)):
                        out[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(chunk))
        return out  # type: ignore[return-value]

    def _generation_settings(self, gen_kwargs: dict):
        from megatron_sota.inference.sampling import SamplingSettings

        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=None) + self._chat_stop  # end-of-document stops a row
        budget = int(kwargs.pop("max_gen_toks"))
        sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        top_k, top_p = int(kwargs.pop("top_k", 0) or 0), float(kwargs.pop("top_p", 1.0) or 1.0)
        if kwargs:
            log.warning("megatron_sota: generation kwargs %s are not supported and are ignored", sorted(kwargs))
        if not sample or temperature == 0.0:
            return SamplingSettings(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0), until, budget
        return SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=1.0), until, budget

    def _generate(self, prompts: List[List[int]], budget: int, settings, until: List[str], indices: List[int]) -> List[str]:
        from megatron_sota.inference.generation import generate
        from megatron_sota.serving.text_stream import TextStream

        streams = [TextStream(self.tokenizer, until) for _ in prompts]

        def on_step(chosen: torch.Tensor, running: torch.Tensor) -> List[int]:
            ended = []
            for row, token in enumerate(chosen.tolist()):
                if running[row] and not streams[row].stopped:
                    streams[row].add(token)
                    if streams[row].stopped:
                        ended.append(row)
            return ended

        # Each row draws from its own generator (seed + request index): a sampled answer does not depend on its batch.
        result = generate(self.model, prompts, budget, settings, stop_ids=[self.tokenizer.eod],
                          row_seeds=[self.seed + i for i in indices], on_step=on_step)
        for stream, reason in zip(streams, result.stop_reasons):
            stream.finish(drop_last=reason == "stop_id")
        return [stream.text for stream in streams]
