"""The OpenAI wire format: request bodies (validated, unknown fields refused), responses, errors.

Requests are pydantic models with `extra="forbid"`, so a misspelled field is a 400 naming it
rather than silently ignored. Fields OpenAI clients commonly send with neutral values (`n=1`,
zero penalties, `logprobs=false`, `user`) are accepted; other values of them are refused, since
this server does not implement them. `top_k` and `repetition_penalty` are extensions. Omitted
sampling fields take the server's defaults (`instructune serve --temperature ...`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import fields, replace
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from instructune.data.conversation import Message
from instructune.data.messages import parse_messages, parse_tools
from instructune.inference.sampling import SamplingParams

B = TypeVar("B", bound=BaseModel)


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
        names = [f.name for f in fields(SamplingParams) if f.name != "max_new_tokens"]
        sent = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if isinstance(self.stop, str | list):
            sent["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return replace(defaults, max_new_tokens=max_tokens, **sent)

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


def parse_body(raw: bytes, model: type[B], max_depth: int) -> B:
    """`raw` as JSON validated into `model`; a 400 naming the field, or the body's fault (not
    JSON, not an object, nested past `max_depth`, a string with a lone surrogate)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
    except RecursionError:  # deeper than the interpreter's stack
        raise _too_deep(max_depth) from None
    _check_json_shape(data, max_depth)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}", param=param) from None


def _too_deep(limit: int) -> ApiError:
    return ApiError(400, f"the body nests JSON deeper than {limit} levels", code="invalid_json")


def _check_json_shape(data: Any, max_depth: int) -> None:
    """400 for JSON that parses but that no client means: nested past `max_depth`, or a string
    (key or value) holding a lone UTF-16 surrogate such as `"\\ud800"`, which can't be encoded."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ApiError(
                    400,
                    f"the body has a string that is not valid Unicode ({err.reason})",
                    code="invalid_json",
                ) from None
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise _too_deep(max_depth)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _response(
    rid: str, kind: str, model: str, choices: list[dict[str, Any]], use: dict[str, int] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if use is not None:
        body["usage"] = use
    return body


def chat_response(rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]) -> Any:
    return _response(rid, "chat.completion", model, choices, use)


def chat_chunk(
    rid: str, model: str, delta: dict[str, str], finish: str | None, use: Any = None
) -> dict[str, Any]:
    """A stream chunk: one delta, or (`use` given) the final usage-only chunk."""
    choices = [] if use else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return _response(rid, "chat.completion.chunk", model, choices, use or None)


def completion_response(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int] | None
) -> dict[str, Any]:
    return _response(rid, "text_completion", model, choices, use)
