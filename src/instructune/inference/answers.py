"""From a queued `Request` to the HTTP answer: its events collected into one body, or streamed as
OpenAI server-sent events ending in `data: [DONE]`.

A request whose consumer leaves (a client that hangs up, a stream closed early) is marked
cancelled, so the decode thread drops its rows at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import Request as HttpRequest

from instructune.inference import openai_api as api
from instructune.inference.scheduler import Event, Request


async def _events(req: Request, timeout_s: float) -> AsyncIterator[Event]:
    """The request's events up to its final one; marks it cancelled if the consumer leaves."""
    done = False
    try:
        while True:
            event = await asyncio.wait_for(req.events.get(), timeout_s + 30)
            yield event
            if event.finish_reason is not None:
                done = True
                return
    finally:
        if not done:
            req.cancelled = True


async def answer(
    http: HttpRequest, reqs: Sequence[Request], timeout_s: float
) -> list[tuple[Event, str]]:
    """Each request's final event and text; if the client hangs up first, its rows are marked
    cancelled at once, so the decode thread drops them at its next step."""
    watcher = asyncio.create_task(_cancel_on_disconnect(http, reqs))
    try:
        return list(await asyncio.gather(*(_collect(r, timeout_s) for r in reqs)))
    finally:
        for r in reqs:  # one prompt failed (or the client left): don't decode the others on
            r.cancelled = True
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _cancel_on_disconnect(http: HttpRequest, reqs: Sequence[Request]) -> None:
    # The body is read, so the next ASGI message is `http.disconnect`: uvicorn sends it when
    # the socket closes (or once the response is complete, when this task is already gone).
    while (await http.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.01)
    for r in reqs:
        r.cancelled = True


def _failure(event: Event) -> api.ApiError:
    if event.error == "timeout":
        return api.ApiError(504, "the request ran past the server's timeout", type="timeout")
    return api.ApiError(503, event.error or "generation stopped", type="server_error")


async def _collect(req: Request, timeout_s: float) -> tuple[Event, str]:
    parts = []
    async for event in _events(req, timeout_s):
        if event.finish_reason is None:
            parts.append(event.delta)
        elif event.error is not None or event.finish_reason == "abort":
            raise _failure(event)
        else:
            return event, "".join(parts)
    raise api.ApiError(503, "generation ended without a result", type="server_error")


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def chat_stream(body: api.ChatRequest, req: Request, timeout_s: float) -> AsyncIterator[str]:
    rid = api.new_id("chatcmpl")
    yield _sse(api.chat_chunk(rid, body.model, {"role": "assistant", "content": ""}, None))
    async for event in _events(req, timeout_s):
        if event.finish_reason is None:
            yield _sse(api.chat_chunk(rid, body.model, {"content": event.delta}, None))
        elif event.error is not None or event.finish_reason == "abort":
            yield _sse(_failure(event).body())
        else:
            yield _sse(api.chat_chunk(rid, body.model, {}, event.finish_reason))
            if body.include_usage:
                use = api.usage(event.prompt_tokens, event.completion_tokens)
                yield _sse(api.chat_chunk(rid, body.model, {}, None, use))
    yield "data: [DONE]\n\n"


async def completion_stream(
    body: api.CompletionRequest, req: Request, timeout_s: float
) -> AsyncIterator[str]:
    rid = api.new_id("cmpl")
    async for event in _events(req, timeout_s):
        if event.finish_reason is None:
            choice = {"index": 0, "text": event.delta, "finish_reason": None, "logprobs": None}
            yield _sse(api.completion_response(rid, body.model, [choice], None))
        elif event.error is not None or event.finish_reason == "abort":
            yield _sse(_failure(event).body())
        else:
            choice = {
                "index": 0,
                "text": "",
                "finish_reason": event.finish_reason,
                "logprobs": None,
            }
            use = api.usage(event.prompt_tokens, event.completion_tokens)
            yield _sse(
                api.completion_response(
                    rid, body.model, [choice], use if body.include_usage else None
                )
            )
    yield "data: [DONE]\n\n"
