"""What happens to a conversation longer than `data.max_length` (`data.truncation`).

- `turns` (default): keep the leading whole turns that fit, through the last trained assistant
  turn that ends within `max_length`; a conversation whose first trained turn doesn't fit is
  dropped. The kept part is exactly the template's render of those turns.
- `truncate_prompt`: cut characters out of the middle of the longest user-side texts, marked
  with `CUT_MARKER`, and render again, so the system prompt, the template's headers, the start
  of the instruction and its end (often the question) stay; responses are never cut. A row
  whose responses alone don't fit is dropped.
- `drop`: drop it.

Each kept-but-cut row counts as truncated; each dropped one is counted and listed as `too_long`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from instructune.data.conversation import Conversation, Message

CUT_MARKER = " [...] "
SHRINK_ROUNDS = 4
"""Render-and-tokenize passes `truncate_prompt` makes before it drops a row."""
_MARGIN = 1.05  # chars cut per estimated char over: tokens per char vary along a text


def leading_turns(bounds: list[int], max_length: int) -> int:
    """How many trained turns fit: the largest k with turn k-1's end (token) <= `max_length`.

    `bounds` is (prompt end, turn end) per trained turn, in tokens, increasing."""
    ends = bounds[1::2]
    return sum(1 for end in ends if end <= max_length)


def through_turn(conv: Conversation, trained: list[int], k: int) -> Conversation:
    """`conv` cut after the k-th trained assistant turn (`trained`: their message indices)."""
    end = trained[k - 1] + 1
    return Conversation(conv.messages[:end], conv.source, conv.label, conv.meta)


def shrink_prompt(
    conv: Conversation, tokens: int, max_length: int, count: Callable[[str], int]
) -> Conversation | None:
    """A copy of `conv` with about enough user-side characters cut (middle, marked) to lose
    `tokens - max_length` tokens, or None when there is no user text left to cut.

    Characters per token are measured on the user texts (`count`: text → tokens); the caller
    renders again and calls back with the new length while the row is still too long.
    """
    fields = _user_fields(conv)
    joined = "".join(fields.values())
    if len(joined) <= len(CUT_MARKER) * len(fields):
        return None
    per_token = len(joined) / max(count(joined), 1)
    todo = math.ceil((tokens - max_length) * per_token * _MARGIN) + len(CUT_MARKER)
    while todo > 0:
        key = max(fields, key=lambda k: len(fields[k]))
        text = fields[key]
        if len(text) <= len(CUT_MARKER):
            break
        keep = max(len(text) - todo - len(CUT_MARKER), 0)
        fields[key] = text[: (keep + 1) // 2] + CUT_MARKER + text[len(text) - keep // 2 :]
        todo -= len(text) - len(fields[key])
    return _with_fields(conv, fields)


_FieldKey = tuple[str, int | str]


def _user_fields(conv: Conversation) -> dict[_FieldKey, str]:
    """The texts that may be cut: user messages, and for alpaca-style rows (whose first user
    turn the `alpaca` template renders from `meta`) the instruction and input instead."""
    first_user = next((i for i, m in enumerate(conv.messages) if m.role == "user"), None)
    from_meta = conv.meta.get("instruction") is not None
    fields: dict[_FieldKey, str] = {}
    for i, message in enumerate(conv.messages):
        if message.role != "user":
            continue
        if i == first_user and from_meta:
            for name in ("instruction", "input"):
                if conv.meta.get(name):
                    fields[("meta", name)] = conv.meta[name]
        else:
            fields[("message", i)] = message.content
    return fields


def _with_fields(conv: Conversation, fields: dict[_FieldKey, str]) -> Conversation:
    messages = list(conv.messages)
    meta = dict(conv.meta)
    for (kind, key), text in fields.items():
        if kind == "meta":
            meta[str(key)] = text
        else:
            messages[int(key)] = replace(messages[int(key)], content=text)  # keeps its name
    if meta.get("instruction") is not None:  # the first user turn joins them, as formats do
        first = next(i for i, m in enumerate(messages) if m.role == "user")
        parts = (meta.get("instruction", ""), meta.get("input", ""))
        messages[first] = Message("user", "\n\n".join(p for p in parts if p.strip()))
    return Conversation(messages, conv.source, conv.label, meta)
