"""The `preference` row format: preference rows → one `Conversation` per pair.

The prompt turns and the chosen answer become the conversation, the chosen answer its last
assistant turn; the rejected answer goes in `meta["rejected"]` (and whole, as JSON, in
`meta["rejected_message"]` when it carries tool calls or reasoning). The shapes read:

- `{prompt or messages, chosen, rejected}` with string answers (TRL's "standard" and
  "conversational prompt" forms; `prompt` may itself be a message list);
- full conversations as `chosen`/`rejected` message lists that share every turn but the last
  (binarized UltraFeedback), or Anthropic HH transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`)
  with a shared prefix;
- UltraFeedback-style `{prompt, completions: [{response or text, score or overall_score}]}`:
  the best-scored completion is chosen, the worst rejected.

`data.preference` turns these conversations into token pairs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from instructune.data.conversation import (
    REJECTED,
    REJECTED_MESSAGE,
    TOOLS,
    Conversation,
    Message,
    Role,
    row_error,
)
from instructune.data.messages import message_json, parse_messages, parse_tools

__all__ = ["HH_MARKER", "preference_row"]

HH_MARKER = "\n\nHuman:"
"""How an Anthropic HH transcript starts: only a string starting with it is read as one."""
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def preference_row(
    row: Mapping[str, Any], location: str, columns: Mapping[str, str]
) -> Conversation:
    """One preference row as a `Conversation` (see the module docstring); RowError when bad."""

    def get(name: str) -> Any:
        return row.get(columns.get(name, name))

    if get("completions") is not None:
        chosen, rejected = _by_score(get("completions"), location)
    else:
        chosen, rejected = get("chosen"), get("rejected")
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if value is None:
                raise row_error(
                    location,
                    f"missing field {columns.get(name, name)!r}",
                    f"columns found: {', '.join(sorted(map(str, row)))}",
                )
    good, bad = _turns(chosen, "chosen", location), _turns(rejected, "rejected", location)
    if not good or not bad:
        raise row_error(location, "empty answer", "chosen and rejected must not be empty lists")
    # Full conversations as answers (UltraFeedback-binarized, HH) carry their prompt: their
    # shared turns are the prompt, and a `prompt` column beside them repeats it.
    full = any(len(t) > 1 or (t and t[0].role != "assistant") for t in (good, bad))
    given = get("messages") if get("messages") is not None else get("prompt")
    prompt = [] if full else _turns(given, "prompt", location)
    shared = 0
    while shared < min(len(good), len(bad)) - 1 and good[shared] == bad[shared]:
        shared += 1
    prompt += good[:shared]
    good, bad = good[shared:], bad[shared:]
    for name, rest in (("chosen", good), ("rejected", bad)):
        if len(rest) != 1 or rest[0].role != "assistant" or not _answered(rest[0]):
            raise row_error(
                location,
                f"{name} is not one answer after the shared prompt",
                "chosen and rejected must differ only in their last assistant turn",
            )
    if not prompt or prompt[-1].role == "assistant":
        raise row_error(location, "no prompt", "the answers must follow a user turn")
    system = get("system")
    if isinstance(system, str) and system.strip() and prompt[0].role != "system":
        prompt.insert(0, Message("system", system))
    meta = {REJECTED: bad[0].content}
    if bad[0] != Message("assistant", bad[0].content):  # tool calls, reasoning: kept whole
        meta[REJECTED_MESSAGE] = message_json(bad[0])
    tools = parse_tools(get("tools"), columns.get("tools", "tools"), location)
    if tools:
        meta[TOOLS] = tools
    return Conversation([*prompt, good[0]], location, meta=meta)


def _answered(message: Message) -> bool:
    return bool(message.content.strip() or message.tool_calls)


def _by_score(completions: Any, location: str) -> tuple[str, str]:
    if not isinstance(completions, list) or len(completions) < 2:
        raise row_error(location, "wrong type for 'completions'", "expected a list of 2 or more")
    scored = []
    for i, item in enumerate(completions):
        text = item.get("response", item.get("text")) if isinstance(item, dict) else None
        score = item.get("score", item.get("overall_score")) if isinstance(item, dict) else None
        if not isinstance(text, str) or not isinstance(score, int | float):
            raise row_error(
                location,
                "bad completion",
                f"completions[{i}] needs response (or text) and a numeric score",
            )
        scored.append((float(score), text))
    scored.sort(key=lambda s: s[0])
    if scored[0][0] == scored[-1][0]:
        raise row_error(location, "no preference", "every completion has the same score")
    return scored[-1][1], scored[0][1]


def _turns(value: Any, name: str, location: str) -> list[Message]:
    """A string (an HH transcript when it starts with `HH_MARKER`, else one turn: user for the
    prompt, assistant for answers) or a message list (`data.messages`' rules), as messages.

    Only the marker at the very start makes a transcript: an answer that mentions
    "\\n\\nHuman: " in its text is still one answer."""
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith(HH_MARKER):
            parts = _HH_TURN.split(value)[1:]
            roles: dict[str, Role] = {"Human": "user", "Assistant": "assistant"}
            pairs = zip(parts[::2], parts[1::2], strict=True)
            return [Message(roles[r], t.strip()) for r, t in pairs]
        return [Message("user" if name == "prompt" else "assistant", value)]
    if not isinstance(value, list):
        raise row_error(
            location,
            f"wrong type for {name!r}",
            f"expected a string or a message list, got {type(value).__name__}",
        )
    return parse_messages(value, name, location, "openai")
