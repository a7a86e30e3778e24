"""Load one data source into checked `Conversation`s: read rows, pick the format, convert.

Row-level problems are counted by reason with `on_error: skip` or raised with `on_error: fail`;
a source with no usable rows at all is a `DataError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from instructune.config.schema import DataSource
from instructune.data.conversation import (
    ON_ERROR_HINT,
    REJECTED,
    REJECTED_MESSAGE,
    Conversation,
    DataError,
    Dropped,
    Message,
    RowError,
)
from instructune.data.formats import COLUMNS_EXAMPLE, FORMATS, Columns, RowFormat, detect_format
from instructune.data.lineage import file_sha256
from instructune.data.messages import drop_reasoning, message_from_json, message_json
from instructune.data.readers import iter_rows

__all__ = ["MAX_ERRORS", "LoadResult", "load_conversations"]

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    conversations: list[Conversation]
    format: str
    detected: bool
    reason: str
    rows_read: int = 0
    """Rows seen (after expanding file-level records), kept or dropped."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Reason → count of rows dropped with `on_error: skip`."""
    errors: list[str] = field(default_factory=list)
    """The first `MAX_ERRORS` messages, for the report."""
    dropped_rows: list[Dropped] = field(default_factory=list)
    """Every dropped row: where and why (for `summary.json`)."""
    adjusted: Counter[str] = field(default_factory=Counter)
    """Rows kept with a change or a warning: `trailing_turns` (user/tool turns removed after the
    last assistant turn), `non_alternating` (two user or two assistant turns in a row)."""
    file_hash: str = ""


MAX_ERRORS = 20


def load_conversations(
    source: DataSource,
    on_error: Literal["fail", "skip"] = "fail",
    system_prompt: str | None = None,
    reasoning: Literal["keep", "drop"] = "keep",
) -> LoadResult:
    """Read, convert and check every row of one source (at most `source.max_rows` rows).

    `on_error="fail"` raises the first RowError; `"skip"` counts each bad row by reason and goes
    on. A source with no usable rows is a DataError either way.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    result = LoadResult([], source.format or "", source.format is None, "")
    if source.format is not None:
        result.reason = "set by data.format"
    elif source.columns:
        result.format, result.reason = "columns", "data.columns is set"
    digest = None if Path(source.path).expanduser().exists() else hashlib.sha256()
    units = itertools.islice(_units(source, result, digest), source.max_rows)
    for item in units:
        result.rows_read += 1
        if isinstance(item, RowError):
            if on_error == "fail":
                raise RowError(item.source, f"{item.problem}; {ON_ERROR_HINT}", item.reason)
            result.dropped[item.reason] += 1
            detail = item.problem.removeprefix(item.reason).removeprefix(": ")
            result.dropped_rows.append(Dropped(item.source, item.reason, detail))
            if len(result.errors) < MAX_ERRORS:
                result.errors.append(str(item))
            continue
        _tidy_turns(item, result.adjusted)
        if reasoning == "drop":
            _drop_reasoning(item, result.adjusted)
        if system_prompt and item.messages[0].role == "user":
            item.messages.insert(0, Message("system", system_prompt))
        result.conversations.append(item)
    if not result.conversations:
        reasons = ", ".join(f"{r}: {n}" for r, n in result.dropped.most_common(3))
        detail = f"all {result.rows_read} rows were dropped ({reasons})" if reasons else "no rows"
        raise DataError(f"{source.path}: no usable rows: {detail}")
    result.file_hash = digest.hexdigest() if digest else file_sha256(source.path)
    if result.adjusted["non_alternating"]:
        log.warning(
            "%s: %d conversations have two user or two assistant turns in a row; they are kept "
            "as they are (check the data if that is not intended)",
            source.path,
            result.adjusted["non_alternating"],
        )
    if result.adjusted["trailing_turns"]:
        log.warning(
            "%s: removed %d user/tool turns that came after a conversation's last assistant turn "
            "(nothing answers them, so nothing could be trained on them)",
            source.path,
            result.adjusted["trailing_turns"],
        )
    return result


def _tidy_turns(conv: Conversation, adjusted: Counter[str]) -> None:
    """Drop turns after the last assistant turn; count conversations whose roles don't alternate."""
    last = max(conv.assistant_indices(), default=len(conv.messages) - 1)
    if last + 1 < len(conv.messages):
        adjusted["trailing_turns"] += len(conv.messages) - last - 1
        del conv.messages[last + 1 :]
    roles = [m.role for m in conv.messages if m.role != "system"]
    if any(a == b != "tool" for a, b in itertools.pairwise(roles)):
        adjusted["non_alternating"] += 1


def _drop_reasoning(conv: Conversation, adjusted: Counter[str]) -> None:
    """`data.reasoning: drop`: every assistant turn (and a rejected answer) without reasoning."""
    before = list(conv.messages)
    conv.messages[:] = [drop_reasoning(m) for m in before]
    changed = sum(a is not b for a, b in zip(before, conv.messages, strict=True))
    structured = conv.meta.get(REJECTED_MESSAGE)
    if structured is not None:
        given = message_from_json(structured, conv.source)
        answer = drop_reasoning(given)
        conv.meta[REJECTED_MESSAGE] = message_json(answer)
        conv.meta[REJECTED] = answer.content
        changed += answer is not given
    elif REJECTED in conv.meta:
        text = drop_reasoning(Message("assistant", conv.meta[REJECTED])).content
        changed += text != conv.meta[REJECTED]
        conv.meta[REJECTED] = text
    if changed:
        adjusted["reasoning_dropped"] += changed


def _units(
    source: DataSource, result: LoadResult, digest: Any
) -> Iterator[Conversation | RowError]:
    """Conversations and row errors in file order; detects the format on the first good row."""
    columns = source.columns or {}
    row_format: RowFormat | None = None
    if result.format:
        row_format = FORMATS[result.format]
        _check_mapping(row_format, columns, source.path)
    for location, row in iter_rows(source):
        if isinstance(row, RowError):
            yield row
            continue
        if digest is not None:  # a Hub dataset: hash what was read, there's no file to hash
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        if row_format is None:
            result.format, result.reason = detect_format(set(row), location)
            row_format = FORMATS[result.format]
            _check_mapping(row_format, columns, source.path)
        yield from row_format.expand(row, location, columns)


def _check_mapping(row_format: RowFormat, columns: Columns, path: str) -> None:
    if row_format.name == "columns" and not columns:
        raise DataError(f"{path}: format 'columns' needs data.columns (e.g. {COLUMNS_EXAMPLE})")
    known = {*row_format.required, *row_format.optional, "label"}
    unknown = sorted(set(columns) - known)
    if unknown:
        raise DataError(
            f"{path}: data.columns maps {unknown}, which format {row_format.name!r} doesn't "
            f"use; valid names: {sorted(known)} (set data.format to the format you map for)"
        )
