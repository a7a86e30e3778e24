"""Sources → items: the units that are filtered, split and rendered.

A table row becomes one item rendered later through its templates; a Super-NaturalInstructions
instance and an OpenAssistant conversation arrive already as messages (`oasst.py`, `natinst.py`).
Each item carries `content`, the data its row holds (never template text), which the filters
compare, and `group`, the unit the train/eval split keeps together (a row, an instance, a tree).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from instructune.config.build import BuildSource
from instructune.config.schema import DataSource
from instructune.curation.task_templates import BuildTemplate
from instructune.data.conversation import DataError, Message, RowError, row_error
from instructune.data.readers import Row, iter_rows
from instructune.data.templates import TemplateError

__all__ = ["Item", "SkipCounter", "label_text", "read_source_rows", "table_items"]


@dataclass(slots=True)
class Item:
    source: str
    index: int
    """0-based position among the source's items (the `meta.index` of its rows)."""
    location: str
    """`file:line N` / `file:row N` of the input row, for errors, meta and the report."""
    group: str
    content: str
    label: str | None = None
    row: Row | None = None
    messages: list[Message] | None = None
    rejected: str | None = None
    """A preference item's rejected answer (its chosen one ends `messages`)."""


@dataclass
class SkipCounter:
    """Rows skipped under `on_error: skip`, by reason, with the first example of each."""

    on_error: str
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def handle(self, error: RowError) -> None:
        """Raise under `fail`; count under `skip`."""
        if self.on_error == "fail":
            raise error
        self.counts[error.reason] += 1
        self.examples.setdefault(error.reason, str(error))


def read_source_rows(source: BuildSource, skips: SkipCounter) -> Iterator[tuple[str, Row]]:
    data = DataSource(path=source.path, split=source.split, max_rows=source.max_rows)
    for location, row in iter_rows(data):
        if isinstance(row, RowError):
            skips.handle(row)
        else:
            yield location, row


def label_text(value: Any) -> str:
    """A label value as the string `options` keys are compared with (bools as true/false)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def table_items(
    source: BuildSource, templates: list[BuildTemplate], skips: SkipCounter
) -> list[Item]:
    """Every row of a table source, checked against the templates before anything renders."""
    used = sorted(set().union(*(t.fields() for t in templates)))
    needs_answer = any("answer" in t.variables for t in templates)
    if needs_answer and source.label is None:
        used = sorted({*used, "answer"})  # without a label, `answer` is a column
    items: list[Item] = []
    checked = False
    for location, row in read_source_rows(source, skips):
        if not checked:
            _check_columns(source, templates, row, location, used)
            checked = True
        try:
            label = _row_label(source, row, location, templates)
            values = [_field(source, row, name, location) for name in used]
        except RowError as e:
            skips.handle(e)
            continue
        content = "\n".join(values)
        items.append(Item(source.name, len(items), location, str(len(items)), content, label, row))
    if not items:
        raise DataError(f"source {source.name!r} ({source.path}): no usable rows")
    return items


def _check_columns(
    source: BuildSource, templates: list[BuildTemplate], row: Row, location: str, used: list[str]
) -> None:
    """A placeholder whose column the first row lacks is a template error, raised up front."""
    for template in templates:
        names = sorted(template.fields() | ({"answer"} & set(used)))
        for name in names:
            column = source.fields.get(name, name)
            if column not in row:
                raise TemplateError(
                    f"template {template.id!r} of source {source.name!r} uses {{{{ {name} }}}}, "
                    f"column {column!r}, which the source lacks ({location} has columns: "
                    f"{', '.join(sorted(map(str, row)))}); map it with "
                    f"`fields: {{{name}: <column>}}`"
                )
    for key in ("label", "rationale"):
        column = getattr(source, key)
        if column is not None and column not in row:
            raise TemplateError(
                f"source {source.name!r}: {key} column {column!r} is missing ({location} has "
                f"columns: {', '.join(sorted(map(str, row)))})"
            )


def _row_label(
    source: BuildSource, row: Row, location: str, templates: list[BuildTemplate]
) -> str | None:
    if source.label is None:
        return None
    value = row.get(source.label)
    if value is None or value == "":
        raise row_error(location, "missing label", f"column {source.label!r} is empty")
    label = label_text(value)
    if source.options is not None and label not in source.options:
        uses = next(
            (t.id for t in templates if t.variables & {"answer", "options_"}), templates[0].id
        )
        raise row_error(
            location,
            "label not in options",
            f"label {label!r} (column {source.label!r}) is not in the options of source "
            f"{source.name!r} (known: {', '.join(source.options)}); template {uses!r} needs it",
        )
    return label


def _field(source: BuildSource, row: Row, name: str, location: str) -> str:
    column = source.fields.get(name, name)
    value = row.get(column)
    if value is None:
        raise row_error(location, f"missing field {column!r}", f"placeholder {name!r} is empty")
    if isinstance(value, list | dict):
        raise row_error(location, f"wrong type for {column!r}", f"got {type(value).__name__}")
    return label_text(value)
