"""An lm-eval model that passes every request to another and counts the requests and the seconds spent in it.

For throughput comparisons (cli/eval_throughput.py); it must not change a request or a response.
"""

from __future__ import annotations

import time
from typing import Dict

from lm_eval.api.model import LM

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class CountingLM(LM):
    def __init__(self, inner: LM) -> None:
        super().__init__()
        self.inner = inner
        self.requests: Dict[str, int] = {kind: 0 for kind in REQUEST_TYPES}
        self.seconds: Dict[str, float] = {kind: 0.0 for kind in REQUEST_TYPES}

    def _timed(self, kind: str, requests):
        start = time.perf_counter()
        out = getattr(self.inner, kind)(requests)
        self.seconds[kind] += time.perf_counter() - start
        self.requests[kind] += len(requests)
        return out

    def loglikelihood(self, requests):
        return self._timed("loglikelihood", requests)

    def loglikelihood_rolling(self, requests):
        return self._timed("loglikelihood_rolling", requests)

    def generate_until(self, requests):
        return self._timed("generate_until", requests)

    def get_model_info(self) -> dict:
        return self.inner.get_model_info() if hasattr(self.inner, "get_model_info") else {}
