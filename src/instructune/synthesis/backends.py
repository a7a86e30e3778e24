"""The `Backend` protocol `synthesize` talks to and its request/response types (the registry,
`make_backend`, is in run.py, above the backends that import these).

A backend turns chat prompts (one user message each) into completions. It yields results as they
finish, in any order, so the caller can put each one in the request cache at once: a crash then
loses at most the requests still in flight. Failures a request can't recover from (an endpoint that
stays down) raise `BackendError` with a one-line message naming the endpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from instructune.inference.sampling import SamplingParams

if TYPE_CHECKING:
    pass


class BackendError(RuntimeError):
    """The backend can't serve requests any more (endpoint down, auth refused, retries spent)."""


def params_record(params: SamplingParams) -> dict[str, object]:
    """A request's sampling as its cache key and each row's meta record it.

    The record keeps the names requests were first cached under (`max_tokens`, OpenAI's name) and
    lists `top_k` and `repetition_penalty` only when set, so caches written before them still hit.
    """
    record: dict[str, object] = {
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
    }
    if params.top_k:
        record["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        record["repetition_penalty"] = params.repetition_penalty
    return record


@dataclass(frozen=True)
class Request:
    prompt: str
    params: SamplingParams

    def key(self, model_id: str) -> str:
        """sha256 of the model, prompt and parameters: the request cache key."""
        blob = json.dumps(
            {"model": model_id, "prompt": self.prompt, "params": params_record(self.params)},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Response:
    text: str
    finish_reason: str = "stop"
    """`stop`, `length` (cut by max_tokens), or `error` (the endpoint rejected this request)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why a request failed for good (e.g. `http_400: prompt too long`); counted as a drop."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class BackendStats:
    requests: int = 0
    """Requests actually sent (cache hits excluded)."""
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Backend(Protocol):
    kind: str
    """Registry name: `local`, `openai` (tests add `scripted`)."""
    model: str
    endpoint: str
    """Where requests go, for error messages (a URL, a model path)."""

    def complete(self, requests: Sequence[Request]) -> Iterator[tuple[int, Response]]:
        """Yield `(index into requests, response)` as each finishes, in any order."""
        ...

    def close(self) -> None: ...
