"""`/v1/chat/completions` takes tool definitions, assistant tool calls, tool results and content
parts, and renders them with the rules training reads data with (`data.messages`): the prompt it
scores is the one training puts before the answer."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

from instructune.data.messages import TOOLS_HEADER
from instructune.data.templates import load_template
from instructune.inference.engine import Engine

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
MESSAGES = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in"}, {"type": "text", "text": "Paris?"}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "18C"},
]


def _serve(engine: Engine) -> tuple[int, Any]:
    import uvicorn

    from instructune.inference.server import ServerState, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ServerState(engine, {"tiny": None})), port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(200):
        if server.started:
            return port, server
        time.sleep(0.05)
    raise RuntimeError("the server did not start")


def _post(port: int, body: dict[str, Any]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_tool_conversation_is_served_with_the_training_prompt(
    tiny_model: Any, tiny_tok: Any
) -> None:
    engine = Engine(tiny_model, tiny_tok, load_template("chat", tiny_tok))
    port, server = _serve(engine)
    try:
        body = {"model": "tiny", "messages": MESSAGES, "tools": TOOLS, "max_tokens": 2}
        status, out = _post(port, body)
        assert status == 200, out
        # the tiny ChatML template takes no tools or tool_calls: both go into the text
        expected = (
            f"<|im_start|>system\n{TOOLS_HEADER}\n{json.dumps(TOOLS[0])}<|im_end|>\n"
            "<|im_start|>user\nWeather in\nParis?<|im_end|>\n"
            '<|im_start|>assistant\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
            "<|im_end|>\n"
            "<|im_start|>tool\n18C<|im_end|>\n<|im_start|>assistant\n"
        )
        assert out["usage"]["prompt_tokens"] == len(
            tiny_tok(expected, add_special_tokens=False)["input_ids"]
        )

        bad = {"model": "tiny", "messages": MESSAGES, "tools": [{"description": "x"}]}
        status, out = _post(port, bad)
        assert status == 400 and "bad tool in tools[0]" in out["error"]["message"]
    finally:
        server.should_exit = True
