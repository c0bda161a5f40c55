"""The server's one generation thread: a bounded queue of completions, micro-batched into left-padded generate() calls.

It owns the model and runs on a thread of its own; requests and HTTP are the app's (serving/app.py). A job's events
(text deltas, then its outcome) are handed to a callback on the engine's thread.

Batching: the thread takes the oldest waiting job, then up to `max_batch - 1` more that sample the same way (same
temperature, top-k, top-p and repetition penalty), waiting at most `batch_wait_s` for them to arrive. Every row has its
own seed and budget, so a completion is what it would be alone (greedy ones exactly; sampled ones draw from their own
generator). Beam search runs one job at a time.

Under tensor parallelism rank 0 runs the engine and the other ranks `follow` it: rank 0 shares each batch's inputs
and, at every step, the rows its stop strings and departed clients ended, so every rank runs the same forwards and
ends the same rows (`share` broadcasts rank 0's value; an idle engine shares an empty batch every KEEPALIVE_S so the
other ranks' waiting collective never times out).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, List, Optional, Sequence, Union

from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.serving.text_stream import TextStream

log = logging.getLogger(__name__)

KEEPALIVE_S = 60.0
"""An idle engine's empty batches, for the other TP ranks (the session's collectives time out after 10 minutes)."""

Share = Callable[..., object]
"""share(value) on rank 0, share() elsewhere: rank 0's value on every rank (torch.distributed.broadcast_object_list)."""


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Outcome:
    text: str
    finish_reason: str
    """OpenAI's: 'stop' (end-of-document, a stop token or a stop string) or 'length'."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failure:
    message: str


Event = Union[Delta, Outcome, Failure]


@dataclass
class Job:
    """One completion to generate; `emit` receives its events on the engine's thread."""

    prompt_ids: List[int]
    max_tokens: int
    settings: SamplingSettings
    seed: int
    emit: Callable[[Event], None]
    stop: Sequence[str] = ()
    num_beams: int = 1
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    """Set by the app when the client went away: the job is skipped or its row ended at the next step."""

    def batch_key(self) -> tuple:
        """Jobs with equal keys may share a generate() call."""
        if self.num_beams > 1:
            return ("beams", id(self))
        s = self.settings
        if s.greedy:  # top-k and top-p do not change an argmax
            return ("greedy", s.repetition_penalty)
        return ("sampled", s.temperature, s.top_k, s.top_p, s.repetition_penalty)


@dataclass(frozen=True)
class BatchInputs:
    """What every rank needs to run one batch: the same on all of them."""

    prompts: List[List[int]]
    budgets: List[int]
    settings: SamplingSettings
    seeds: List[int]
    num_beams: int = 1


class QueueFull(MegatronSotaError):
    """The bounded queue holds max_queue jobs: the caller answers 503 with Retry-After."""


class Engine:
    def __init__(self, model, tokenizer, stop_ids: Sequence[int], max_batch: int = 8, max_queue: int = 64,
                 batch_wait_s: float = 0.005, metrics=None, share: Optional[Share] = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = sorted(set(int(i) for i in stop_ids))
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self.share = share
        self._waiting: Deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._running = False
        self._thread: Optional[threading.Thread] = None

    # -- the app's side ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="generation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._running = False
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queues `jobs` (a request's completions) together, or raises QueueFull and queues none."""
        with self._ready:
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} completions are waiting (the queue holds {self.max_queue})")
            self._waiting.extend(jobs)
            self._gauge_queue()
            self._ready.notify()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the engine's thread ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                if self.share is not None:
                    self.share(None)  # the other ranks leave follow()
                return
            if not batch:
                if self.share is not None:
                    self.share(BatchInputs([], [], SamplingSettings(), []))
                continue
            if self.metrics is not None:
                self.metrics.running(len(batch))
                self.metrics.batch(len(batch))
            try:
                self._run(batch)
            except Exception as err:  # a failed batch fails its requests, not the server
                log.exception("generation failed for a batch of %d", len(batch))
                for job in batch:
                    job.emit(Failure(f"generation failed: {type(err).__name__}: {err}"))
                if self.share is not None:
                    raise  # the other ranks may be inside the batch: stop serving (/health turns 503)
            finally:
                if self.metrics is not None:
                    self.metrics.running(0)

    def _next_batch(self) -> Optional[List[Job]]:
        with self._ready:
            while True:
                if self._running and not self._waiting:
                    self._ready.wait(KEEPALIVE_S)
                if not self._running:
                    return None
                if not self._waiting:
                    return []
                first = self._waiting.popleft()
                if not first.cancelled:
                    break
            batch = [first]
            key = first.batch_key()
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.max_batch and first.num_beams == 1:
                batch.extend(self._take_matching(key, self.max_batch - len(batch)))
                left = deadline - time.perf_counter()
                if len(batch) >= self.max_batch or left <= 0:
                    break
                self._ready.wait(left)
            self._gauge_queue()
            return batch

    def _take_matching(self, key: tuple, limit: int) -> List[Job]:
        taken = [job for job in self._waiting if job.batch_key() == key][:limit]
        for job in taken:
            self._waiting.remove(job)
        return [job for job in taken if not job.cancelled]

    def _gauge_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth(len(self._waiting))

    def _run(self, batch: List[Job]) -> None:
        inputs = BatchInputs([job.prompt_ids for job in batch], [job.max_tokens for job in batch], batch[0].settings,
                             [job.seed for job in batch], batch[0].num_beams)
        if self.share is not None:
            self.share(inputs)
        if inputs.num_beams > 1:
            self._run_beams(batch[0], inputs)
            return
        streams = [TextStream(self.tokenizer, job.stop) for job in batch]
        started = [False] * len(batch)
        stops = set(self.stop_ids)

        def on_step(chosen, running) -> List[int]:
            ended = []
            for row in running.nonzero().flatten().tolist():
                job, token = batch[row], int(chosen[row])
                if not started[row]:
                    started[row] = True
                    if self.metrics is not None:
                        self.metrics.first_token(time.perf_counter() - job.submitted)
                if job.cancelled:
                    ended.append(row)
                    continue
                if token in stops:
                    continue  # generate() ends the row; a stop token is not text
                delta = streams[row].add(token)
                if delta:
                    job.emit(Delta(delta))
                if streams[row].stopped:
                    ended.append(row)
            return ended if self.share is None else self.share(ended)

        result = run_batch(self.model, inputs, self.stop_ids, on_step)
        for row, job in enumerate(batch):
            rest = streams[row].finish()
            if rest:
                job.emit(Delta(rest))
            reason = "length" if result.stop_reasons[row] == "length" and not streams[row].stopped else "stop"
            job.emit(Outcome(streams[row].text, reason, len(job.prompt_ids), len(result.tokens[row])))

    def _run_beams(self, job: Job, inputs: BatchInputs) -> None:
        result = run_batch(self.model, inputs, self.stop_ids)
        tokens = result.sequences[0]
        stream = TextStream(self.tokenizer, job.stop)
        for token in tokens:
            if token not in self.stop_ids:
                stream.add(token)
        stream.finish()
        if self.metrics is not None:
            self.metrics.first_token(time.perf_counter() - job.submitted)
        if stream.text:
            job.emit(Delta(stream.text))
        reason = "length" if result.stop_reasons[0] == "length" and not stream.stopped else "stop"
        job.emit(Outcome(stream.text, reason, len(job.prompt_ids), len(tokens)))


def run_batch(model, inputs: BatchInputs, stop_ids: Sequence[int], on_step=None):
    """One batch on this rank: generate()'s Generated, or beam search's result for a beam job."""
    if inputs.num_beams > 1:
        from megatron_sota.inference.beam_search import beam_search

        return beam_search(model, inputs.prompts[0], inputs.num_beams, inputs.budgets[0], stop_ids=stop_ids)
    from megatron_sota.inference.generation import generate

    return generate(model, inputs.prompts, inputs.budgets, inputs.settings, stop_ids=stop_ids, row_seeds=inputs.seeds,
                    on_step=on_step)


def follow(model, stop_ids: Sequence[int], share: Share) -> None:
    """A tensor-parallel rank other than 0: runs every batch rank 0's engine runs, ending the rows it ends, until rank 0
    shares None (its engine stopped)."""
    while True:
        inputs = share()
        if inputs is None:
            return
        if inputs.prompts:  # an empty batch keeps the collective alive
            run_batch(model, inputs, stop_ids, on_step=lambda chosen, running: share())


def rank_share(value=None):
    """Rank 0's `value` on every rank of the (tensor-parallel) world."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
