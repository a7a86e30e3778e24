"""An OpenAI-compatible HTTP server over the engine: FastAPI routes, limits, errors, lifecycle.

`POST /v1/chat/completions` renders the messages with the run's template (the served prompt is
the training prefix), `POST /v1/completions` continues raw prompts, both with `stream: true` as
server-sent events ending in `data: [DONE]`; `GET /v1/models` lists the served names (the run, and
each `--adapter` run by its folder name); `GET /health` needs no key. There is no `/openapi.json`
or `/docs`: the wire format is OpenAI's, and the bodies are parsed here, not by FastAPI, so the
generated schema would describe nothing a client needs while telling anyone without the key what
is served. Every request is checked before it reaches the decode thread: bearer key, body size,
JSON shape (depth, valid Unicode), model name, message count, prompt tokens and `max_tokens`; any
failure is a 4xx with an OpenAI error body and the server goes on. Decoding is the `Scheduler`'s
(continuous batching, a bounded queue answering 429, a deadline per request); collecting or
streaming the answer is `inference.answers`', where a client that hangs up has its rows dropped at
the next decode step, whether it streamed or not. Shutdown drains
(`inference.drain`): new requests get 503 while running ones finish or are cut.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from instructune.inference import openai_api as api
from instructune.inference.answers import answer, chat_stream, completion_stream
from instructune.inference.sampling import SamplingParams
from instructune.inference.scheduler import QueueFull, Request, Scheduler, make_request

if TYPE_CHECKING:
    from instructune.inference.engine import Engine

log = logging.getLogger(__name__)
B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond it the answer is a 4xx (or 429 for the queue).
    Validated on construction (errors name the field)."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_prompt_tokens: int | None = None
    """None: the model's context minus one token."""
    max_tokens: int = 2048
    """The largest `max_tokens` a request may ask for."""
    max_queue: int = 64
    timeout_s: float = 300.0
    batch_window_s: float = 0.01
    max_json_depth: int = 32
    """OpenAI bodies nest a few levels; deeper is refused before it can exhaust the stack."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_tokens", "max_queue", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")


@dataclass
class ServerState:
    engine: Engine
    models: dict[str, str | None]
    """Served model name → the peft adapter it selects (None: the model as loaded)."""
    defaults: SamplingParams = field(default_factory=SamplingParams)
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    scheduler: Scheduler = field(init=False)
    draining: bool = False
    """Set on SIGTERM/SIGINT (`inference.drain`): new requests get 503, running ones finish."""

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(
            self.engine,
            max_queue=self.limits.max_queue,
            batch_window_s=self.limits.batch_window_s,
        )


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.scheduler.start()
        yield
        state.scheduler.stop()

    app = FastAPI(
        title="instructune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "draining" if state.draining else "ok"
        body = {"status": status, **state.scheduler.load}
        return JSONResponse(body, status_code=503 if state.draining else 200)

    @app.get("/v1/models")
    async def models(request: HttpRequest) -> dict[str, Any]:
        _authorize(state, request)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "instructune"}
            for m in state.models
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: HttpRequest) -> Any:
        return await _chat_completion(state, request)

    @app.post("/v1/completions")
    async def completions(request: HttpRequest) -> Any:
        return await _completion(state, request)

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's (404 route, 405 method), as an OpenAI error body."""

    @app.exception_handler(api.ApiError)
    async def _api_error(_: HttpRequest, err: api.ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_: HttpRequest, err: HTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(api.error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: HttpRequest, err: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(api.error_body(f"internal error: {err}", "server_error"), 500)


async def _chat_completion(state: ServerState, request: HttpRequest) -> Any:
    _authorize(state, request)
    _check_open(state)
    body = await _parse(state, request, api.ChatRequest)
    if len(body.messages) > state.limits.max_messages:
        raise api.ApiError(
            400,
            f"{len(body.messages)} messages; at most {state.limits.max_messages}",
            param="messages",
        )
    try:
        prompt = state.engine.render(body.conversation(), tools=body.tools_json())
    except Exception as err:  # the template refuses this conversation (roles, order)
        raise api.ApiError(
            400, f"the chat template refused the messages: {err}", param="messages"
        ) from None
    req = _submit(state, body, prompt, "messages")
    timeout_s = state.limits.timeout_s
    if body.stream:
        return StreamingResponse(chat_stream(body, req, timeout_s), media_type="text/event-stream")
    ((final, text),) = await answer(request, [req], timeout_s)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": final.finish_reason,
        "logprobs": None,
    }
    use = api.usage(final.prompt_tokens, final.completion_tokens)
    return api.chat_response(api.new_id("chatcmpl"), body.model, [choice], use)


async def _completion(state: ServerState, request: HttpRequest) -> Any:
    _authorize(state, request)
    _check_open(state)
    body = await _parse(state, request, api.CompletionRequest)
    prompts = body.prompts()
    if not prompts or len(prompts) > state.limits.max_messages:
        raise api.ApiError(400, f"give 1 to {state.limits.max_messages} prompts", param="prompt")
    if body.stream and len(prompts) > 1:
        raise api.ApiError(400, "stream: true takes a single prompt", param="prompt")
    reqs: list[Request] = []
    try:
        for p in prompts:
            reqs.append(_submit(state, body, p, "prompt"))
    except api.ApiError:
        for r in reqs:  # the whole call fails: don't decode its other prompts
            r.cancelled = True
        raise
    if body.stream:
        stream = completion_stream(body, reqs[0], state.limits.timeout_s)
        return StreamingResponse(stream, media_type="text/event-stream")
    results = await answer(request, reqs, state.limits.timeout_s)
    choices = [
        {"index": i, "text": text, "finish_reason": final.finish_reason, "logprobs": None}
        for i, (final, text) in enumerate(results)
    ]
    use = api.usage(
        sum(f.prompt_tokens for f, _ in results), sum(f.completion_tokens for f, _ in results)
    )
    return api.completion_response(api.new_id("cmpl"), body.model, choices, use)


# ----------------------------------------------------------------------------- request checks


def _authorize(state: ServerState, request: HttpRequest) -> None:
    if state.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), state.api_key.encode()
    ):
        raise api.ApiError(
            401, "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key"
        )


def _check_open(state: ServerState) -> None:
    if state.draining:
        raise api.ApiError(
            503, "the server is shutting down; retry later", type="server_error", code="draining"
        )


async def _parse(state: ServerState, request: HttpRequest, model: type[B]) -> B:
    """The body (at most `max_body_bytes`) validated into `model`; a 413 or 400 otherwise."""
    limit = state.limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise api.ApiError(413, f"request body over {limit} bytes", code="body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise api.ApiError(413, f"request body over {limit} bytes", code="body_too_large")
    return api.parse_body(bytes(raw), model, state.limits.max_json_depth)


def _submit(state: ServerState, body: Any, prompt: str, what: str) -> Request:
    """Check the model name, prompt length and max_tokens; queue the request (429 when full)."""
    if body.model not in state.models:
        raise api.ApiError(
            404,
            f"model {body.model!r} is not served here; choose one of {sorted(state.models)}",
            param="model",
            code="model_not_found",
        )
    engine, limits = state.engine, state.limits
    ids = engine.encode(prompt)
    context = engine.max_length
    cap = min(limits.max_prompt_tokens or context - 1, context - 1)
    if not ids:
        raise api.ApiError(400, "the prompt is empty", param=what)
    if len(ids) > cap:
        raise api.ApiError(
            400,
            f"the prompt has {len(ids)} tokens; at most {cap}",
            param=what,
            code="context_length_exceeded",
        )
    room = context - len(ids)
    if body.max_tokens is not None and body.max_tokens > min(limits.max_tokens, room):
        raise api.ApiError(
            400,
            f"max_tokens={body.max_tokens}: at most {min(limits.max_tokens, room)} "
            f"(server cap {limits.max_tokens}; {room} tokens left in the context)",
            param="max_tokens",
        )
    max_tokens = body.max_tokens or min(state.defaults.max_new_tokens, limits.max_tokens, room)
    try:
        params = body.sampling(state.defaults, max_tokens)
    except ValueError as err:
        raise api.ApiError(400, str(err)) from None
    request = make_request(engine.row(ids, params), state.models[body.model], limits.timeout_s)
    # again, with no await since: a drain that finds the scheduler idle has refused this one
    _check_open(state)
    try:
        state.scheduler.submit(request)
    except QueueFull as err:
        raise api.ApiError(
            429,
            f"the server is busy ({err}); retry later",
            type="rate_limit_error",
            code="queue_full",
        ) from None
    return request


# ----------------------------------------------------------------------------- running


def serve_state(
    bundle: Any,
    *,
    defaults: SamplingParams,
    limits: Limits,
    api_key: str | None,
    max_batch_size: int,
) -> ServerState:
    """The state for a loaded bundle: its adapters (or its own name) are the served models."""
    from instructune.inference.engine import Engine

    engine = Engine.from_bundle(bundle, max_batch_size=max_batch_size)
    models: dict[str, str | None] = (
        {name: name for name in bundle.adapters} if bundle.adapters else {bundle.name: None}
    )
    return ServerState(engine, models, defaults, limits, api_key)
