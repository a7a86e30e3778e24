"""What the pipelines call: cached, budgeted, counted requests over any backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from instructune.inference.sampling import SamplingParams
from instructune.synthesis.backends import Backend, BackendStats, Request, Response
from instructune.synthesis.cache import RequestCache


class BudgetExhausted(Exception):
    """The request budget (`backend.max_requests`) is spent; the run stops keeping its output."""


class Client:
    """Sends requests through the cache: a cached request is answered without reaching the backend.

    Each sampled request gets a seed derived from the run seed and its position in the run's
    request sequence, so two identical prompts at different points are distinct samples (and
    distinct cache entries), while a replay after a crash asks exactly the same requests again.
    Greedy requests carry no seed: the same greedy prompt is one cache entry, asked once.
    """

    def __init__(
        self,
        backend: Backend,
        cache: RequestCache,
        seed: int,
        max_requests: int | None = None,
        on_response: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.seed = seed
        self.max_requests = max_requests
        self.stats = BackendStats()
        self.on_response = on_response
        self._counter = 0
        self._started = time.monotonic()

    @property
    def model_id(self) -> str:
        return f"{self.backend.kind}:{self.backend.model}"

    def request(self, prompt: str, params: SamplingParams) -> Request:
        self._counter += 1
        seed = (self.seed * 1_000_003 + self._counter) % 2**31 if params.temperature > 0 else None
        return Request(prompt, replace(params, seed=seed))

    def key(self, request: Request) -> str:
        return request.key(self.model_id)

    def requests_per_s(self) -> float:
        return self.stats.requests / max(time.monotonic() - self._started, 1e-9)

    def run(self, requests: Sequence[Request]) -> list[Response]:
        """Responses in request order; new ones are cached as each arrives."""
        out: list[Response | None] = [None] * len(requests)
        missing: list[int] = []
        for i, req in enumerate(requests):
            hit = self.cache.get(self.key(req))
            if hit is None:
                missing.append(i)
            else:
                self.stats.cache_hits += 1
                out[i] = hit
        exhausted = False
        if self.max_requests is not None:
            left = self.max_requests - self.stats.requests
            exhausted = left < len(missing)
            missing = missing[: max(left, 0)]
        todo = [requests[i] for i in missing]
        for j, response in self.backend.complete(todo):
            self.cache.put(self.key(todo[j]), todo[j], response)
            self._count(response)
            out[missing[j]] = response
        if exhausted:
            raise BudgetExhausted(f"request budget of {self.max_requests} spent")
        return [r for r in out if r is not None]

    def _count(self, response: Response) -> None:
        self.stats.requests += 1
        self.stats.prompt_tokens += response.prompt_tokens
        self.stats.completion_tokens += response.completion_tokens
        if response.error:
            reason = response.error.split(":")[0]
            self.stats.errors[reason] = self.stats.errors.get(reason, 0) + 1
        if self.on_response is not None:
            self.on_response()
