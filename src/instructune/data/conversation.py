"""The one internal schema every row format is normalized to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
"""`tool` holds a tool's result (OpenAI `tool`, ShareGPT `observation`): rendered by templates
that know the role, never trained. A tool *call* is the assistant speaking: an assistant turn."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call an assistant turn makes (OpenAI `tool_calls[i].function`).

    `arguments` is canonical JSON text when the data's arguments were JSON (an object, or a
    string holding one), else the string as given; templates get the parsed object (see
    `data.messages.template_messages`). Text keeps `Message` hashable and the dedup key exact.
    """

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. Only `role` and `content` are required; the rest is what tool and reasoning data
    carry (read by `data.messages`, the one parser; rendered by `template_messages`)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls an assistant turn makes (trained like its text)."""
    reasoning: str | None = None
    """An assistant turn's `reasoning_content` (its `<think>` text given apart from the answer)."""
    name: str | None = None
    """The speaker's name (OpenAI `name`), or the tool's name on a tool result."""
    tool_call_id: str | None = None
    """On a tool result: the id of the call it answers."""


@dataclass(slots=True)
class Conversation:
    """A normalized row: turns plus where it came from (for errors and lineage).

    `source` is `file:line` (or `file:row N` for tabular files) so every later error can point
    back at the input. `label` is the class label when the data has one (used to stratify the
    split and by classification evaluation).
    """

    messages: list[Message]
    source: str
    label: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m.role == "assistant"]

    def text_key(self) -> str:
        """Normalized text used for exact dedup (whitespace folded, case kept): every turn's text,
        tool calls, reasoning and name, and the row's tool definitions."""
        key = "\x1e".join(_message_key(m) for m in self.messages)
        tools = self.meta.get(TOOLS)
        if tools is not None:
            key = f"{key}\x1c{tools}"
        # preference rows with one prompt and chosen answer but different rejected ones differ
        rejected = self.meta.get(REJECTED)
        if rejected is not None:
            key = f"{key}\x1d{' '.join(rejected.split())}"
        structured = self.meta.get(REJECTED_MESSAGE)
        return key if structured is None else f"{key}\x1d{structured}"


REJECTED = "rejected"
"""The `Conversation.meta` key holding a preference row's rejected answer (its text)."""
REJECTED_MESSAGE = "rejected_message"
"""Set beside `REJECTED` when the rejected answer has tool calls or reasoning: the whole
message as OpenAI JSON (`data.messages.message_json`)."""
TOOLS = "tools"
"""The `Conversation.meta` key holding a row's tool definitions (canonical JSON of the list)."""


def _message_key(m: Message) -> str:
    parts = [m.role, " ".join(m.content.split())]
    parts += [f"{c.name}({c.arguments})" for c in m.tool_calls]
    if m.reasoning is not None:
        parts.append(" ".join(m.reasoning.split()))
    if m.name is not None:
        parts.append(m.name)
    return "\x1f".join(parts)


class RowError(ValueError):
    """A malformed input row; the message names file, line and field.

    `reason` is the short form (no row specifics) that rows dropped with `on_error: skip` are
    counted by; it defaults to the whole `problem`.
    """

    def __init__(self, source: str, problem: str, reason: str | None = None) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem
        self.reason = reason or problem


def row_error(source: str, reason: str, detail: str) -> RowError:
    """A RowError counted under the short `reason`, with the row's specifics in `detail`."""
    return RowError(source, f"{reason}: {detail}", reason=reason)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A row left out of the data, for the list in `summary.json`: where, why, and the details."""

    source: str
    """`file:line N` (or `file:row N`), as in error messages."""
    reason: str
    """The short reason rows are counted under (`too_long`, `empty response`, ...)."""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "detail": self.detail}


ON_ERROR_HINT = "set `data.on_error: skip` to drop such rows (each is counted and listed)"


class DataError(ValueError):
    """A data source that can't be used at all (missing file, unknown shape, unreadable)."""
