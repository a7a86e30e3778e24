"""Row formats: each turns one input row into a `Conversation` (or, file-level, into many).

`FORMATS` is the registry a config's `data.format` names; `detect_format` picks one from the
columns when the config doesn't. Every format also reads an optional `label` column into
`Conversation.label`, maps field names through `data.columns` (our name → the file's column),
and ignores columns it doesn't know.

Chat-template rendering: alpaca and dolly rows become a user turn `instruction + "\\n\\n" + input`
(the input only when non-empty) and an assistant turn. The `alpaca` *template* instead renders the
original Stanford prompt, so the raw fields are kept in `meta["instruction"]` and `meta["input"]`.
`text` rows become a single assistant message with no user turn: completion-style data whose whole
text is trained; templates render it without any chat markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from instructune.data.conversation import (
    TOOLS,
    Conversation,
    DataError,
    Message,
    RowError,
    row_error,
)
from instructune.data.messages import Style, parse_messages, parse_tools
from instructune.data.preference_rows import preference_row
from instructune.data.readers import Row

__all__ = [
    "COLUMNS_EXAMPLE",
    "FORMATS",
    "Columns",
    "RowFormat",
    "detect_format",
]

Columns = Mapping[str, str]
Converter = Callable[[Row, str, Columns], Conversation]
Expander = Callable[[Row, str, Columns], Iterator[Conversation | RowError]]


@dataclass(frozen=True)
class RowFormat:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    description: str
    convert: Converter
    expander: Expander | None = None
    """Set for file-level formats whose one record holds many conversations."""

    def to_conversation(
        self, row: Row, location: str, columns: Columns | None = None
    ) -> Conversation:
        """Convert one row; raises RowError naming the field that is missing or wrong."""
        columns = columns or {}
        conversation = self.convert(row, location, columns)
        if conversation.label is None:
            conversation.label = _label(row, location, columns)
        return conversation

    def expand(
        self, row: Row, location: str, columns: Columns | None = None
    ) -> Iterator[Conversation | RowError]:
        """The conversations of one record; a bad one is yielded as its RowError, not raised,
        so the records after it are still read."""
        if self.expander is not None:
            yield from self.expander(row, location, columns or {})
            return
        try:
            yield self.to_conversation(row, location, columns)
        except RowError as e:
            yield e

    def expects(self) -> str:
        optional = f" (optional: {', '.join(self.optional)})" if self.optional else ""
        return f"{self.name}: {', '.join(self.required)}{optional}"


# ----------------------------------------------------------------------------- field access


def _value(row: Row, name: str, location: str, columns: Columns, required: bool) -> Any:
    key = columns.get(name, name)
    value = row.get(key)
    if value is None and required:
        mapped = f" (data.columns maps {name} to it)" if key != name else ""
        found = "is null" if key in row else f"columns found: {', '.join(sorted(map(str, row)))}"
        raise row_error(location, f"missing field {key!r}", f"{found}{mapped}")
    return value


def _text(row: Row, name: str, location: str, columns: Columns, required: bool = True) -> str:
    """A text field; numbers are accepted (a numeric answer is still an answer), absent → ''."""
    value = _value(row, name, location, columns, required)
    return "" if value is None else _as_text(value, columns.get(name, name), location)


def _as_text(value: Any, key: str, location: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise row_error(location, f"wrong type for {key!r}", f"expected a string, got {_kind(value)}")


def _label(row: Row, location: str, columns: Columns) -> str | None:
    key = columns.get("label", "label")
    value = row.get(key)
    meta = row.get("meta")
    if key not in row and isinstance(meta, dict):  # rows written by `instructune build`
        value = meta.get("label")
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return _as_text(value, key, location)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# ----------------------------------------------------------------------------- building turns


def _finish(
    turns: list[Message], location: str, system: str = "", meta: dict[str, str] | None = None
) -> Conversation:
    """Add a top-level system prompt and check what every template relies on."""
    if system.strip():
        if turns and turns[0].role == "system" and turns[0].content != system:
            raise row_error(
                location, "conflicting system prompts", "a 'system' field and turn differ"
            )
        if not turns or turns[0].role != "system":
            turns.insert(0, Message("system", system))
    for i, message in enumerate(turns):  # indices are 0-based, like the data's own lists
        if message.role == "system" and i > 0:
            raise row_error(location, "system turn not first", f"message {i} is a system turn")
        if message.role == "assistant" and not (message.content.strip() or message.tool_calls):
            raise row_error(location, "empty response", f"message {i} (assistant) is empty")
    if not any(m.role == "assistant" for m in turns):
        raise RowError(location, "no assistant turn")
    return Conversation(messages=turns, source=location, meta=meta or {})


def _prompt_response(
    row: Row, location: str, columns: Columns, input_field: str, output_field: str
) -> Conversation:
    instruction = _text(row, "instruction", location, columns)
    extra = _text(row, input_field, location, columns, required=False)
    output = _text(row, output_field, location, columns)
    prompt = "\n\n".join(part for part in (instruction, extra) if part.strip())
    if not prompt.strip():
        raise row_error(location, "empty prompt", f"instruction and {input_field} are both empty")
    turns = [Message("user", prompt), Message("assistant", output)]
    system = _text(row, "system", location, columns, required=False)
    return _finish(turns, location, system, {"instruction": instruction, "input": extra})


def _alpaca(row: Row, location: str, columns: Columns) -> Conversation:
    return _prompt_response(row, location, columns, "input", "output")


def _dolly(row: Row, location: str, columns: Columns) -> Conversation:
    conversation = _prompt_response(row, location, columns, "context", "response")
    category = _text(row, "category", location, columns, required=False)
    if category:
        conversation.meta["category"] = category
    return conversation


def _columns(row: Row, location: str, columns: Columns) -> Conversation:
    if not columns:
        raise DataError(f"{location}: format 'columns' needs data.columns (e.g. {COLUMNS_EXAMPLE})")
    return _prompt_response(row, location, columns, "input", "output")


def _turns(
    row: Row, location: str, columns: Columns, list_field: str, style: Style
) -> Conversation:
    """A message list (read by `data.messages`, the parser generate and serve use too) and the
    row's optional `tools` and `system`."""
    key = columns.get(list_field, list_field)
    items = _value(row, list_field, location, columns, required=True)
    turns = parse_messages(items, key, location, style)
    tools = parse_tools(
        _value(row, "tools", location, columns, required=False),
        columns.get("tools", "tools"),
        location,
    )
    system = _text(row, "system", location, columns, required=False)
    return _finish(turns, location, system, {TOOLS: tools} if tools else None)


def _sharegpt(row: Row, location: str, columns: Columns) -> Conversation:
    return _turns(row, location, columns, "conversations", "sharegpt")


def _messages(row: Row, location: str, columns: Columns) -> Conversation:
    return _turns(row, location, columns, "messages", "openai")


def _text_row(row: Row, location: str, columns: Columns) -> Conversation:
    text = _text(row, "text", location, columns)
    if not text.strip():
        raise row_error(location, "empty text", f"field {columns.get('text', 'text')!r} is empty")
    return Conversation(messages=[Message("assistant", text)], source=location)


def _ni_single(row: Row, location: str, columns: Columns) -> Conversation:
    raise row_error(location, "file-level format", "natural_instructions records expand into many")


def _ni_expand(row: Row, location: str, columns: Columns) -> Iterator[Conversation | RowError]:
    """A Super-NaturalInstructions task: user = definition + input, assistant = first output.

    Positive/negative examples are not turned into few-shot prompts (the task's instances carry
    the training signal); they stay in the file for whoever needs them.
    """
    try:
        definition = _value(row, "Definition", location, columns, required=True)
        if isinstance(definition, list):
            definition = "\n".join(_as_text(d, "Definition", location) for d in definition)
        definition = _as_text(definition, "Definition", location)
        instances = _value(row, "Instances", location, columns, required=True)
        if not isinstance(instances, list):
            raise row_error(location, "wrong type for 'Instances'", f"got {_kind(instances)}")
    except RowError as e:
        yield e
        return
    for i, instance in enumerate(instances):
        where = f"{location} Instances[{i}]"
        try:
            yield _ni_instance(instance, where, definition)
        except RowError as e:
            yield e


def _ni_instance(instance: Any, where: str, definition: str) -> Conversation:
    if not isinstance(instance, dict):
        raise row_error(
            where, "wrong type for instance", f"expected an object, got {_kind(instance)}"
        )
    outputs = _value(instance, "output", where, {}, required=True)
    if isinstance(outputs, list):
        if not outputs:
            raise row_error(where, "empty response", "'output' is an empty list")
        outputs = outputs[0]
    text = _text(instance, "input", where, {})
    turns = [
        Message("user", f"{definition}\n\n{text}"),
        Message("assistant", _as_text(outputs, "output", where)),
    ]
    meta = {"id": str(instance["id"])} if instance.get("id") is not None else {}
    return _finish(turns, where, meta=meta)


FORMATS: dict[str, RowFormat] = {
    f.name: f
    for f in (
        RowFormat(
            "alpaca",
            ("instruction", "output"),
            ("input", "system", "label"),
            "Stanford Alpaca rows: instruction, optional input, output.",
            _alpaca,
        ),
        RowFormat(
            "sharegpt",
            ("conversations",),
            ("system", "tools", "label"),
            "ShareGPT: conversations = [{from: human|gpt|system|function_call|observation, "
            "value}], multi-turn; tools = the functions the model may call (list or JSON).",
            _sharegpt,
        ),
        RowFormat(
            "messages",
            ("messages",),
            ("system", "tools", "label"),
            "OpenAI chat: messages = [{role: system|user|assistant|tool, content, tool_calls?, "
            "reasoning_content?}], multi-turn; tools = the functions the model may call.",
            _messages,
        ),
        RowFormat(
            "dolly",
            ("instruction", "response"),
            ("context", "category", "system", "label"),
            "Databricks Dolly: instruction, context, response, category.",
            _dolly,
        ),
        RowFormat(
            "text",
            ("text",),
            ("label",),
            "Completion-style text: the whole text is trained, no prompt.",
            _text_row,
        ),
        RowFormat(
            "natural_instructions",
            ("Definition", "Instances"),
            ("Positive Examples",),
            "A Super-NaturalInstructions task file: one conversation per instance.",
            _ni_single,
            _ni_expand,
        ),
        RowFormat(
            "preference",
            ("chosen", "rejected"),
            ("prompt", "messages", "completions", "system", "label"),
            "Preference pairs: prompt (or messages) with chosen and rejected answers, full "
            "chosen/rejected conversations (UltraFeedback, Anthropic HH), or completions with "
            "scores.",
            preference_row,
        ),
        RowFormat(
            "columns",
            ("instruction", "output"),
            ("input", "system", "label"),
            "Any table: data.columns maps instruction/input/output/system/label to its columns.",
            _columns,
        ),
    )
}
"""Row formats by the name `data.format` uses."""

COLUMNS_EXAMPLE = "{instruction: question, output: answer}"
# Detection priority: the first format whose key columns are all present wins.
_DETECTION: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("preference", ("chosen", "rejected")),
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("dolly", ("instruction", "response")),
    ("alpaca", ("instruction", "output")),
    ("natural_instructions", ("Definition", "Instances")),
    ("text", ("text",)),
)


def detect_format(columns: set[str], location: str) -> tuple[str, str]:
    """(format name, reason) from the columns of the first row; DataError when unclear."""
    if {"messages", "conversations"} <= columns:
        raise DataError(
            f"{location}: ambiguous rows: both 'messages' and 'conversations' columns; set "
            "data.format to messages or sharegpt (or data.columns: {messages: <column>})"
        )
    for name, keys in _DETECTION:
        if set(keys) <= columns:
            return name, f"columns {' + '.join(keys)} → {name}"
    expects = "; ".join(FORMATS[name].expects() for name, _ in _DETECTION)
    raise DataError(
        f"{location}: can't tell the row format from the columns {sorted(columns)}. "
        f"Formats expect: {expects}. Set data.format, or map your columns with data.columns "
        f"(e.g. {COLUMNS_EXAMPLE})."
    )
