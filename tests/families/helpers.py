"""The conversations every family is prepared with, and the prepared `Case` the tests read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fixtures import Family

SYSTEM = "SYSMARK Answer briefly."
PLAIN = [  # multi-turn with a system prompt
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "USERMARK1 What is two plus two?"},
    {"role": "assistant", "content": "ANSWER1 It is four."},
    {"role": "user", "content": "USERMARK2 And three plus three?"},
    {"role": "assistant", "content": "ANSWER2 Six, of course."},
]
SINGLE = [
    {"role": "user", "content": "USERMARK3 Name a colour."},
    {"role": "assistant", "content": "ANSWER3 Blue."},
]
REASONING = [  # reasoning in the answer text, the way R1/Qwen3 data carries it
    {"role": "user", "content": "USERMARK4 Is 7 prime?"},
    {
        "role": "assistant",
        "content": "<think>\nTHINK4 no divisor up to 2\n</think>\n\nANSWER4 Yes.",
    },
    {"role": "user", "content": "USERMARK5 Is 9 prime?"},
    {"role": "assistant", "content": "<think>\nTHINK5 3 times 3\n</think>\n\nANSWER5 No."},
]
CONVERSATIONS = {"plain": PLAIN, "single": SINGLE, "reasoning": REASONING}

CALL_ID = "call0abcd"  # Mistral's template wants 9 alphanumerics
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "DESCMARK The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL = [  # OpenAI tool calling: a call, its result, the answer
    {"role": "user", "content": "USERMARK6 What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": CALL_ID,
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "content": "TOOLRESULT 18 degrees", "tool_call_id": CALL_ID},
    {"role": "assistant", "content": "ANSWER6 It is 18 degrees."},
]


@dataclass
class Case:
    family: Family
    folder: Path
    tokenizer: Any
    prepared: Any
    summary: dict[str, Any]
    sources: dict[str, str]
    """conversation name → the end of its `file:line N` source."""
    engine: Any = None
    """The inference engine loaded from `folder` (by the `engine` fixture, once)."""
