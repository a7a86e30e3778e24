"""The OpenAI wire format: a request's sampling over the server's defaults, response bodies."""

from __future__ import annotations

from typing import Any

import pytest

from instructune.inference.openai_api import (
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_response,
)
from instructune.inference.sampling import SamplingParams

DEFAULTS = SamplingParams(
    max_new_tokens=100, temperature=0.6, top_p=0.9, top_k=40, stop=("###",), seed=5
)


def _chat(**fields: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_omitted_fields_take_the_server_defaults() -> None:
    assert _chat().sampling(DEFAULTS, 7) == SamplingParams(
        max_new_tokens=7, temperature=0.6, top_p=0.9, top_k=40, stop=("###",), seed=5
    )


@pytest.mark.parametrize(
    ("sent", "changed"),
    [
        ({"temperature": 0.0}, {"temperature": 0.0}),  # 0 is a value, not "omitted"
        ({"top_p": 0.5, "top_k": 0}, {"top_p": 0.5, "top_k": 0}),
        ({"repetition_penalty": 1.2}, {"repetition_penalty": 1.2}),
        ({"seed": 0}, {"seed": 0}),
        ({"stop": "END"}, {"stop": ("END",)}),
        ({"stop": ["a", "b"]}, {"stop": ("a", "b")}),
        ({"stop": []}, {"stop": ()}),  # an empty list clears the default stops
    ],
)
def test_sent_fields_override_the_defaults(sent: dict[str, Any], changed: dict[str, Any]) -> None:
    expected = {**vars(_chat().sampling(DEFAULTS, 7)), **changed}
    assert vars(_chat(**sent).sampling(DEFAULTS, 7)) == expected
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "x", **sent})
    assert vars(completion.sampling(DEFAULTS, 7)) == expected


def test_response_bodies() -> None:
    choice = {"index": 0, "text": "x", "finish_reason": "stop", "logprobs": None}
    use = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    body = chat_response("id1", "m", [choice], use)
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert (body["object"], body["usage"]) == ("chat.completion", use)
    chunk = chat_chunk("id1", "m", {"content": "a"}, None)
    assert chunk["object"] == "chat.completion.chunk" and "usage" not in chunk
    assert chunk["choices"] == [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]
    last = chat_chunk("id1", "m", {}, None, use)
    assert (last["choices"], last["usage"]) == ([], use)
    assert "usage" not in completion_response("id2", "m", [choice], None)
    assert completion_response("id2", "m", [choice], use)["object"] == "text_completion"
