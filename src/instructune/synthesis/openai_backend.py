"""The `openai` backend: any OpenAI-compatible endpoint through the official `openai` client.

Requests run on a thread pool (`concurrency` in flight). Refused connections, timeouts, 429 and
5xx are retried with exponential backoff and full jitter (honouring `Retry-After` when sent); when
the retries run out the run stops with a one-line `BackendError` naming the endpoint. A request the
endpoint rejects for good (400, 413, 422) becomes an error response, counted as a drop. The API key
is read from the environment variable the config names and is never stored or written.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from instructune.redact import redact_url
from instructune.synthesis.backends import BackendError, Request, Response

if TYPE_CHECKING:
    from instructune.config.synthesize import SynthBackendConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_BACKOFF_MAX_S = 30.0


def _api_key(cfg: SynthBackendConfig) -> str:
    if cfg.api_key_env is None:
        return "no-key"  # the client insists on a value; servers without auth ignore it
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ValueError(
            f"synthesize.backend.api_key_env: environment variable {cfg.api_key_env} is not set"
        )
    return key


class OpenAIBackend:
    kind = "openai"

    def __init__(self, cfg: SynthBackendConfig) -> None:
        import openai

        self.cfg = cfg
        if not cfg.model:
            raise ValueError("synthesize.backend.model: required for type openai")
        self.model: str = cfg.model
        url = cfg.base_url or DEFAULT_BASE_URL
        self.endpoint = redact_url(url)  # what messages and reports name: never a credential
        # Retries are ours (backoff with jitter, counted, and a clear final error).
        self.client = openai.OpenAI(
            base_url=url, api_key=_api_key(cfg), timeout=cfg.timeout, max_retries=0
        )
        self.retries = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="synth-openai")
        self._jitter = random.Random()  # timing only: never touches what is generated

    def complete(self, requests: Sequence[Request]) -> Iterator[tuple[int, Response]]:
        futures: dict[Future[Response], int] = {
            self._pool.submit(self._one, req): i for i, req in enumerate(requests)
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield futures[fut], fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def _one(self, request: Request) -> Response:
        import openai

        transient = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)

        attempt = 0
        while True:
            try:
                return self._send(request)
            except transient as e:
                error: Exception = e
            except openai.APIStatusError as e:
                if e.status_code in (400, 413, 422):
                    return Response("", "error", error=f"http_{e.status_code}: {_message(e)}")
                if e.status_code < 500 and e.status_code not in (408, 409, 429):
                    raise BackendError(
                        f"{self.endpoint} answered {e.status_code}: {_message(e)}"
                    ) from None
                error = e
            if attempt >= self.cfg.max_retries:
                tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                raise BackendError(
                    f"{self.endpoint}: {_describe(error)} (gave up after {tries})"
                ) from None
            attempt += 1
            with self._lock:
                self.retries += 1
            time.sleep(self._delay(attempt, error))

    def _delay(self, attempt: int, error: Exception) -> float:
        cap = min(_BACKOFF_MAX_S, self.cfg.backoff * 2 ** (attempt - 1))
        delay = self._jitter.uniform(0, cap)
        retry_after = getattr(getattr(error, "response", None), "headers", {}).get("retry-after")
        if retry_after:
            # An HTTP-date instead of seconds: our own backoff is close enough.
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), _BACKOFF_MAX_S))
        return delay

    def _send(self, request: Request) -> Response:
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        # extensions (instructune serve, vLLM); OpenAI's own API refuses them, so only when set
        extra: dict[str, float] = {"top_k": p.top_k} if p.top_k else {}
        if p.repetition_penalty != 1.0:
            extra["repetition_penalty"] = p.repetition_penalty
        if extra:
            kwargs["extra_body"] = extra
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.seed is not None:
            kwargs["seed"] = p.seed
        out = self.client.chat.completions.create(**kwargs)
        usage = out.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        if not out.choices or out.choices[0].message is None:
            return Response("", "error", prompt_tokens, completion_tokens, "malformed: no choices")
        choice = out.choices[0]
        text = choice.message.content or ""
        finish = choice.finish_reason if choice.finish_reason in ("stop", "length") else "stop"
        return Response(text, finish, prompt_tokens, completion_tokens)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"]).splitlines()[0][:200]
    return str(err).splitlines()[0][:200]


def _describe(err: Exception) -> str:
    import openai

    if isinstance(err, openai.APITimeoutError):
        return "request timed out"
    if isinstance(err, openai.APIConnectionError):
        return "connection failed (refused or unreachable)"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {_message(err)}"
    return _message(err)
