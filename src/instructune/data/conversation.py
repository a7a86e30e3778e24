"""The one internal schema every row format is normalized to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
"""`tool` holds a tool's result (OpenAI `tool`, ShareGPT `observation`): rendered by templates
that know the role, never trained. A tool *call* is the assistant speaking: an assistant turn."""


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


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
        """Normalized text used for exact dedup (whitespace folded, case kept)."""
        key = "\x1e".join(f"{m.role}\x1f{' '.join(m.content.split())}" for m in self.messages)
        # preference rows with one prompt and chosen answer but different rejected ones differ
        rejected = self.meta.get("rejected")
        return key if rejected is None else f"{key}\x1d{' '.join(rejected.split())}"


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
