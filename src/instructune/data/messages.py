"""The one message parser: chat messages as data and requests carry them → `Message`s, and
`Message`s → what a chat template is given. Training (`data.formats`, `data.preference_rows`),
`generate` and the OpenAI server all read messages here, so one input renders one way.

The rules, the same everywhere:

- **roles**: OpenAI `system | developer | user | assistant | tool | function` (`developer` is a
  system turn, `function` the legacy name of `tool`); ShareGPT `from` values `system | human |
  user | gpt | assistant | model | function_call | observation | tool`. `function_call` is the
  assistant calling a tool (trained), `observation`/`tool` the tool's result (never trained).
- **content**: a string, a number, `null` (only on an assistant turn with tool calls, or a tool
  result), or OpenAI content parts: text parts (`{type: text, text}`) are joined with `"\\n"`
  (what vLLM does); any other part type is refused.
- **tool calls**: `tool_calls: [{id?, type: function, function: {name, arguments}}]` (or the
  flat `{name, arguments}`), or OpenAI's legacy `function_call: {name, arguments}`; `arguments`
  as an object or a JSON string. A ShareGPT
  `function_call` turn's value is one such call or a list of them as JSON; a value that is not
  is kept as the turn's text.
- **tool results**: `tool_call_id` and `name` are kept; templates that use them get them.
- **reasoning**: `reasoning_content` (or `thinking`, `reasoning`) on an assistant turn;
  `<think>…</think>` inside the content is left as written (templates that know reasoning
  split it themselves).
- **tools**: a list of function definitions (`{type: function, function: {...}}` or the bare
  `{name, description, parameters}`), or a JSON string of one (the glaive/LLaMA-Factory `tools`
  column). Kept as canonical JSON in `Conversation.meta["tools"]`.
- `name` on any turn is kept.

What a template is given (`message_dicts`, `with_tools`): OpenAI-shaped dicts; a feature the
template's source does not use is rendered into the text instead, in one documented format:
tools the template does not take are appended to the system prompt (a system turn is added when
there is none) as `TOOLS_HEADER` followed by one JSON definition per line; tool calls the template
does not render are appended to the assistant's text as one `{"name": ..., "arguments": ...}`
JSON object per line; reasoning the template does not render is put before the answer as
`<think>\\n{reasoning}\\n</think>\\n\\n`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from instructune.data.conversation import Message, Role, ToolCall, row_error

Style = Literal["openai", "sharegpt"]

OPENAI_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
SHAREGPT_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
_KEYS = {"openai": ("role", "content"), "sharegpt": ("from", "value")}

TOOLS_HEADER = "# Tools\n\nYou may call these functions. Their definitions, one JSON object a line:"
"""The heading tools are rendered under in the system prompt of a template without `tools`."""
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
"""Where a message may carry its reasoning (transformers' names for it, in its order)."""
THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
"""A leading reasoning block in an assistant's text."""


def parse_messages(value: Any, where: str, location: str, style: Style) -> list[Message]:
    """A message list (`where` names it in errors, e.g. `messages`) → `Message`s; RowError when
    an item is not a message (naming the item, the field and what is allowed)."""
    if not isinstance(value, list):
        raise row_error(
            location, f"wrong type for {where!r}", f"expected a list, got {_kind(value)}"
        )
    return [parse_message(item, f"{where}[{i}]", location, style) for i, item in enumerate(value)]


def parse_message(item: Any, where: str, location: str, style: Style) -> Message:
    """One message dict (OpenAI or ShareGPT keys) → `Message` under the rules above."""
    if not isinstance(item, Mapping):
        raise row_error(
            location, f"wrong type for {where}", f"expected an object, got {_kind(item)}"
        )
    role_key, content_key = _KEYS[style]
    roles = OPENAI_ROLES if style == "openai" else SHAREGPT_ROLES
    raw_role = item.get(role_key)
    role = roles.get(raw_role.lower()) if isinstance(raw_role, str) else None
    if role is None:
        raise row_error(
            location, f"unknown role {raw_role!r}", f"in {where}; expected one of {sorted(roles)}"
        )
    raw = item.get(content_key)
    calls = _tool_calls(item.get("tool_calls"), f"{where}.tool_calls", location)
    if style == "openai" and item.get("function_call") is not None:  # OpenAI's legacy one call
        calls += (_tool_call(item["function_call"], f"{where}.function_call", location),)
    if style == "sharegpt" and str(raw_role).lower() == "function_call":
        calls, raw = _sharegpt_call(raw, f"{where}.{content_key}", location)
    if raw is None and not (calls or role == "tool"):
        raise row_error(location, f"missing field {content_key!r}", f"in {where}")
    content = "" if raw is None else content_text(raw, f"{where}.{content_key}", location)
    field = next((k for k in REASONING_FIELDS if item.get(k) is not None), None)
    reasoning = None
    if field is not None and role == "assistant":
        reasoning = content_text(item[field], f"{where}.{field}", location)
    return Message(
        role,
        content,
        tool_calls=calls,
        reasoning=reasoning,
        name=_optional_str(item.get("name"), f"{where}.name", location),
        tool_call_id=_optional_str(item.get("tool_call_id"), f"{where}.tool_call_id", location),
    )


def content_text(value: Any, where: str, location: str) -> str:
    """A string, a number, or OpenAI content parts (text parts joined with newlines)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, list):
        raise row_error(
            location, f"wrong type for {where!r}", f"expected a string, got {_kind(value)}"
        )
    texts: list[str] = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else _kind(part)
        text = part.get("text") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(text, str):
            raise row_error(
                location, f"unsupported content part {kind!r}", f"in {where}; only text parts"
            )
        texts.append(text)
    return "\n".join(texts)


def _tool_calls(value: Any, where: str, location: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise row_error(
            location, f"wrong type for {where!r}", f"expected a list, got {_kind(value)}"
        )
    return tuple(_tool_call(c, f"{where}[{i}]", location) for i, c in enumerate(value))


def _tool_call(value: Any, where: str, location: str) -> ToolCall:
    fields = value.get("function", value) if isinstance(value, dict) else None
    name = fields.get("name") if isinstance(fields, dict) else None
    if not isinstance(fields, dict) or not isinstance(name, str) or not name:
        raise row_error(
            location,
            f"bad tool call in {where}",
            "expected {type: function, function: {name, arguments}} or {name, arguments}",
        )
    call_id = value.get("id") if isinstance(value, dict) else None
    arguments = fields.get("arguments", fields.get("parameters", {}))
    return ToolCall(name, _arguments(arguments), _optional_str(call_id, f"{where}.id", location))


def _arguments(value: Any) -> str:
    """Canonical JSON of the arguments (an object, or a string holding JSON), else the string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, ensure_ascii=False)


def _sharegpt_call(value: Any, where: str, location: str) -> tuple[tuple[ToolCall, ...], Any]:
    """A `function_call` turn's value: a JSON call (or list of calls) → (calls, None); anything
    else stays the turn's text (some datasets write calls as free text)."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return (), value
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in items):
        return (), value
    return tuple(_tool_call(c, f"{where}[{i}]", location) for i, c in enumerate(items)), None


def parse_tools(value: Any, where: str, location: str) -> str | None:
    """Tool definitions (a list, or a JSON string of one) → canonical JSON, None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise row_error(location, f"bad JSON in {where!r}", str(e)) from e
    if isinstance(value, dict):  # one definition on its own
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise row_error(
            location, f"wrong type for {where!r}", "expected a list of tool definitions (objects)"
        )
    for i, tool in enumerate(value):
        fields = tool.get("function", tool)
        if not isinstance(fields, dict) or not isinstance(fields.get("name"), str):
            raise row_error(location, f"bad tool in {where}[{i}]", "a tool needs a string `name`")
    return json.dumps(value, ensure_ascii=False) if value else None


def _optional_str(value: Any, where: str, location: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise row_error(location, f"wrong type for {where!r}", f"expected a string, got {_kind(value)}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# ----------------------------------------------------------------------------- rendering


def drop_reasoning(message: Message) -> Message:
    """The turn without its reasoning: no `reasoning_content`, no leading `<think>…</think>`."""
    if message.role != "assistant":
        return message
    content = THINK.sub("", message.content, count=1)
    if content == message.content and message.reasoning is None:
        return message
    return Message(
        message.role, content, message.tool_calls, None, message.name, message.tool_call_id
    )


def message_dicts(messages: Sequence[Message], uses: Collection[str]) -> list[dict[str, Any]]:
    """The messages as a template whose source references `uses` takes them, one dict each.

    Tool calls and reasoning the template does not reference go into the text (see the module
    docstring), so no data is silently left out of the prompt.
    """
    return [_message_dict(m, uses) for m in messages]


def with_tools(
    dicts: list[dict[str, Any]], tools: str | None, uses: Collection[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, the template's `tools`) for a row's tools (`Conversation.meta["tools"]`): given
    as `tools` to a template that uses them, else appended to the system prompt (a system
    message is added when there is none) and `tools` is None."""
    if not tools:
        return dicts, None
    parsed = _parsed_tools(tools)
    if "tools" in uses:
        return dicts, parsed
    block = "\n".join([TOOLS_HEADER, *(json.dumps(t, ensure_ascii=False) for t in parsed)])
    if dicts and dicts[0]["role"] == "system":
        return [{**dicts[0], "content": f"{dicts[0]['content']}\n\n{block}"}, *dicts[1:]], None
    return [{"role": "system", "content": block}, *dicts], None


@functools.lru_cache(maxsize=64)
def _parsed_tools(tools: str) -> list[dict[str, Any]]:
    """Parsed once per distinct tool list (every prefix render of a row reads it)."""
    parsed: list[dict[str, Any]] = json.loads(tools)
    return parsed


def _message_dict(m: Message, uses: Collection[str]) -> dict[str, Any]:
    content = m.content
    out: dict[str, Any] = {"role": m.role}
    if m.reasoning is not None:
        if any(f in uses for f in REASONING_FIELDS):  # transformers fills these two names
            out["reasoning_content"] = out["thinking"] = m.reasoning
        else:
            content = f"<think>\n{m.reasoning}\n</think>\n\n{content}"
    if m.tool_calls:
        if "tool_calls" in uses:
            out["tool_calls"] = [_call_dict(c) for c in m.tool_calls]
        else:
            lines = [_call_text(c) for c in m.tool_calls]
            content = "\n".join([content, *lines] if content else lines)
    out["content"] = content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _call_arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def _call_dict(call: ToolCall) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "function",
        "function": {"name": call.name, "arguments": _call_arguments(call)},
    }
    if call.id is not None:
        out["id"] = call.id
    return out


def _call_text(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": _call_arguments(call)}, ensure_ascii=False)


def message_json(message: Message) -> str:
    """The message as one OpenAI JSON object, every field kept (`parse_message` reads it back)."""
    out = _message_dict(message, ("tool_calls", "reasoning_content"))
    out.pop("thinking", None)
    return json.dumps(out, ensure_ascii=False)


def message_from_json(text: str, location: str) -> Message:
    return parse_message(json.loads(text), "message", location, "openai")
