"""The OpenAI wire format: request bodies (validated, unknown fields refused), responses, errors.

Requests are pydantic models with `extra="forbid"`, so a misspelled field is a 400 naming it
rather than silently ignored. Fields OpenAI clients commonly send with neutral values (`n=1`,
zero penalties, `logprobs=false`, `user`) are accepted; other values of them are refused, since
this server does not implement them. `top_k` and `repetition_penalty` are extensions. Omitted
sampling fields take the server's defaults (`instructune serve --temperature ...`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from instructune.data.conversation import Message
from instructune.data.messages import parse_messages, parse_tools
from instructune.inference.sampling import SamplingParams


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str | dict[str, Any]


class ToolCallBody(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    """One message as OpenAI sends it; `conversation()` reads it with `data.messages`' rules."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallBody] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Literal[False] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _unsupported(cls, v: float) -> float:
        if v != 0:
            raise ValueError("only 0 is supported (use repetition_penalty)")
        return v

    def sampling(self, defaults: SamplingParams, max_tokens: int) -> SamplingParams:
        """The request's parameters over the server's defaults; `max_tokens` already resolved."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        d = defaults
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=d.temperature if self.temperature is None else self.temperature,
            top_p=d.top_p if self.top_p is None else self.top_p,
            top_k=d.top_k if self.top_k is None else self.top_k,
            repetition_penalty=(
                d.repetition_penalty if self.repetition_penalty is None else self.repetition_penalty
            ),
            stop=d.stop if stops is None else tuple(stops),
            seed=d.seed if self.seed is None else self.seed,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("set max_tokens or max_completion_tokens, not both")
        self.max_tokens = self.max_tokens or self.max_completion_tokens
        self.conversation()  # a message the parser refuses is a 400 naming it
        self.tools_json()
        return self

    def conversation(self) -> list[Message]:
        """The messages under the rules training reads data with (`data.messages`)."""
        raw = [m.model_dump(exclude_none=True) for m in self.messages]
        return parse_messages(raw, "messages", "request", "openai")

    def tools_json(self) -> str | None:
        return parse_tools(self.tools, "tools", "request")


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: Literal[False] = False

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class ApiError(Exception):
    """An error answered with an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]) -> Any:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": use,
    }


def chat_chunk(
    rid: str, model: str, delta: dict[str, str], finish: str | None, use: Any = None
) -> dict[str, Any]:
    choices = [] if use else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if use:
        chunk["usage"] = use
    return chunk


def completion_response(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int] | None
) -> dict[str, Any]:
    body = {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if use is not None:
        body["usage"] = use
    return body
