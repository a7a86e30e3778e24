"""Read the rows of a data source as plain dicts, each with a location that names file and line.

Row-level problems (a malformed JSONL line, bytes that aren't UTF-8, a CSV row with too many
fields) are *yielded* as `RowError` values by `iter_rows` instead of raised, so that a caller
running with `on_error: skip` can count the row and keep reading after it. Problems with the
source as a whole (missing file, not JSON at all, unknown extension) raise `DataError`.

Locations: `path:line N` (JSONL, CSV/TSV: the line an editor or spreadsheet shows, header = 1),
`path:row N (line L)` (JSON array: element N starting on line L), `path:row N` (Parquet,
`datasets` folders and Hub datasets).
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from instructune.config.schema import MAX_RECORD_BYTES, DataSource
from instructune.data.conversation import DataError, RowError, row_error
from instructune.data.file_limits import (
    TOO_LARGE,
    bounded_lines,
    missing_message,
    too_large,
    unreadable_reason,
)
from instructune.data.tables import BAD_BYTE, read_csv, read_parquet, read_tsv

Row = dict[str, Any]
RowOrError = Row | RowError

__all__ = [
    "READERS",
    "Row",
    "RowOrError",
    "iter_json_lines",
    "iter_rows",
    "read_json_file",
    "unreadable_reason",
]


def iter_json_lines(path: Path, limit: int = MAX_RECORD_BYTES) -> Iterator[tuple[int, str, Any]]:
    """(line number, "path:line", value) per non-blank JSONL line, for files that are not data
    sources (prompts, seed tasks); a line that isn't JSON or is over `limit` bytes raises naming
    file and line."""
    reason = unreadable_reason(path)
    if reason:
        raise ValueError(f"{path}: {reason}")
    with open(path, "rb") as handle:
        for n, (raw, size) in enumerate(bounded_lines(handle, limit, b"\n"), 1):
            if raw is None:
                raise ValueError(f"{path}:{n}: {TOO_LARGE}: {too_large(size, limit)}")
            if not raw.strip():
                continue
            try:
                yield n, f"{path}:{n}", json.loads(raw.decode("utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: invalid JSON ({err.msg})") from None
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{n}: not UTF-8 (byte {err.start + 1})") from None


def read_json_file(path: Path, error: type[ValueError] = ValueError) -> Any:
    """The JSON value of a whole file that is not a data source (FLAN templates, a JSON list of
    seed tasks); invalid JSON raises `error` naming file and line, as `iter_json_lines` does."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def iter_rows(source: DataSource) -> Iterator[tuple[str, RowOrError]]:
    """Yield `(location, row or RowError)` for each row, at most `source.max_rows` of them."""
    rows = _open_rows(source)
    return itertools.islice(rows, source.max_rows) if source.max_rows else rows


def _open_rows(source: DataSource) -> Iterator[tuple[str, RowOrError]]:
    path = Path(source.path).expanduser()
    reason = unreadable_reason(path)
    if reason:
        raise DataError(f"{source.path}: {reason}")
    if path.is_dir():
        from instructune.data.hub import read_saved_dataset  # lazy: only `datasets` folders

        return read_saved_dataset(path, source.path, source.split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in READERS:
            raise DataError(
                f"{source.path}: unsupported file type {suffix or '(no extension)'!r}; "
                f"supported: {', '.join(sorted(READERS))}, or a folder saved by `datasets`"
            )
        return READERS[suffix](path, source.path, source.max_record_bytes)
    if _looks_like_hub_id(source.path):
        from instructune.data.hub import read_hub  # lazy: only Hub dataset ids

        return read_hub(source.path, source.split)
    raise DataError(missing_message(path, source.path))


# ----------------------------------------------------------------------------- JSON lines


def _read_jsonl(path: Path, name: str, limit: int) -> Iterator[tuple[str, RowOrError]]:
    # Binary lines, decoded one at a time: a bad byte costs that line only, and nothing but the
    # current line (at most `limit` bytes of it) is held in memory.
    with path.open("rb") as f:
        seen_row = False
        for number, (raw, size) in enumerate(bounded_lines(f, limit, b"\n"), start=1):
            location = f"{name}:line {number}"
            if raw is None:
                seen_row = True
                yield location, row_error(location, TOO_LARGE, too_large(size, limit))
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue  # blank lines aren't rows
            if not seen_row:
                _check_first_line(raw, location)
                seen_row = True
            yield location, _parse_line(raw, location)


def _parse_line(raw: bytes, location: str) -> RowOrError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return row_error(
            location, "not UTF-8", f"byte 0x{raw[e.start]:02x} at column {e.start + 1}"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return row_error(location, "invalid JSON", f"{e.msg} at column {e.colno}")
    if not isinstance(value, dict):
        return row_error(location, "not a JSON object", f"got {_json_type(value)}")
    return value


def _check_first_line(raw: bytes, location: str) -> None:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{location}: file is UTF-16; save it as UTF-8")
    if raw.lstrip().startswith(b"[") and not raw.rstrip().endswith(b"]"):
        raise DataError(
            f"{location}: this looks like a JSON array, not JSON lines; name the file .json"
        )


# ----------------------------------------------------------------------------- JSON


def _read_json(path: Path, name: str, limit: int) -> Iterator[tuple[str, RowOrError]]:
    """A JSON array of objects, an object with one list-of-objects field, or one object.

    Many datasets name JSON-lines files `.json`; those are read line by line. Otherwise the text
    is held once (memory grows with the file: convert large files to JSON lines); objects are
    decoded one element at a time so the parsed rows aren't held as well, and an element over
    `limit` characters is a row error like a JSON lines line over it.
    """
    if _is_json_lines(path, limit):
        yield from _read_jsonl(path, name, limit)
        return
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: file is UTF-16; save it as UTF-8")
    # surrogateescape keeps positions exact; rows holding an escaped byte are reported below.
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    del raw
    yield from _JsonText(text, name, limit).rows()


def _is_json_lines(path: Path, limit: int) -> bool:
    """A one-line object followed by a line starting another: JSON lines named `.json` (a first
    line over `limit` counts as one object when it starts like one; it's a row error then)."""
    with path.open("rb") as f:
        lines = (
            b"{}" if line is None else line.strip() for line, _ in bounded_lines(f, limit, b"\n")
        )
        first = next((line for line in lines if line), b"").removeprefix(b"\xef\xbb\xbf")
        second = next((line for line in lines if line), b"")
    return first[:1] == b"{" and first[-1:] == b"}" and second[:1] == b"{"


_WS = re.compile(r"[ \t\n\r]*")
_NEXT_OBJECT = re.compile(r"\n([ \t]*)\{")


class _JsonText:
    """Walks a JSON document's text with `raw_decode`, tracking line numbers of positions."""

    def __init__(self, text: str, name: str, limit: int) -> None:
        self.text = text
        self.name = name
        self.limit = limit
        self.decoder = json.JSONDecoder()
        self.bad_bytes = [m.start() for m in BAD_BYTE.finditer(text)]
        self._pos, self._line = 0, 1
        self.end = 0

    def line_of(self, pos: int) -> int:
        # Positions arrive mostly in order, so counting newlines incrementally is linear overall.
        if pos < self._pos:
            self._pos, self._line = 0, 1
        self._line += self.text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line

    def skip_ws(self, pos: int) -> int:
        match = _WS.match(self.text, pos)
        return match.end() if match else pos

    def rows(self) -> Iterator[tuple[str, RowOrError]]:
        pos = self.skip_ws(0)
        start = self.text[pos : pos + 1]
        if start == "[":
            yield from self.array(pos)
            self.check_trailing(self.end)
        elif start == "{":
            yield from self.object(pos)
        else:
            raise DataError(
                f"{self.name}: not JSON (expected '[' or '{{' at line {self.line_of(pos)}, "
                f"found {self.text[pos : pos + 20]!r})"
            )

    def object(self, pos: int) -> Iterator[tuple[str, RowOrError]]:
        """An object whose only list field holds objects (e.g. {"version": 2, "data": [...]})
        → its elements; any other object (e.g. a natural-instructions task) is one record."""
        rows_at = self.rows_field(pos)
        if rows_at is not None:
            yield from self.array(rows_at)
            return
        location = f"{self.name}:row 1 (line {self.line_of(pos)})"
        try:
            value, end = self.decoder.raw_decode(self.text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{self.name}: invalid JSON at line {e.lineno}: {e.msg}") from e
        self.check_trailing(end)
        yield location, self.check_record(value, pos, end, location)

    def rows_field(self, pos: int) -> int | None:
        """Start of the one list-of-objects field when it is the object's only list field.

        Lists are walked element by element, never decoded whole, so a wrapped file isn't held
        twice (as text and as objects).
        """
        found: list[int] = []
        pos = self.skip_ws(pos + 1)
        try:
            while self.text.startswith('"', pos):
                _, pos = self.decoder.raw_decode(self.text, pos)
                pos = self.skip_ws(pos)
                if not self.text.startswith(":", pos):
                    return None  # malformed: the full decode reports it
                pos = self.skip_ws(pos + 1)
                if self.text.startswith("[", pos):
                    found.append(pos)
                    kinds = {type(v) for _, v in self.elements(pos)}
                    if not kinds or not kinds <= {dict, json.JSONDecodeError}:
                        return None  # a list of strings etc.: the object is one record
                    pos = self.end
                else:
                    _, pos = self.decoder.raw_decode(self.text, pos)
                pos = self.skip_ws(pos)
                pos = self.skip_ws(pos + 1) if self.text.startswith(",", pos) else pos
        except (json.JSONDecodeError, DataError):
            return None
        return found[0] if len(found) == 1 else None

    def elements(self, pos: int) -> Iterator[tuple[int, Any]]:
        """Yield (start, value or JSONDecodeError) per element of the array at `pos`.

        A broken element is skipped by `resync`; `self.end` is the position after the `]`.
        """
        pos = self.skip_ws(pos + 1)
        while pos < len(self.text) and self.text[pos] != "]":
            try:
                value, end = self.decoder.raw_decode(self.text, pos)
                after = self.skip_ws(end)
                if after >= len(self.text):
                    pos = after
                    break
                if self.text[after] not in (",", "]"):
                    raise json.JSONDecodeError("Expecting ',' delimiter", self.text, after)
            except json.JSONDecodeError as e:
                yield pos, e
                pos = self.resync(pos)
                continue
            self.end = end
            yield pos, value
            pos = self.skip_ws(after + 1) if self.text[after] == "," else after
        if pos >= len(self.text):
            raise DataError(f"{self.name}: JSON array is not closed (missing ']' at the end)")
        self.end = pos + 1

    def array(self, pos: int) -> Iterator[tuple[str, RowOrError]]:
        for number, (start, value) in enumerate(self.elements(pos), start=1):
            location = f"{self.name}:row {number} (line {self.line_of(start)})"
            if isinstance(value, json.JSONDecodeError):
                detail = f"{value.msg} at line {value.lineno} column {value.colno}"
                yield location, row_error(location, "invalid JSON", detail)
            elif not isinstance(value, dict):
                yield location, row_error(location, "not a JSON object", f"got {_json_type(value)}")
            else:
                yield location, self.check_record(value, start, self.end, location)

    def resync(self, broken: int) -> int:
        """Find the next element after a broken one, or fail: rows can't be dropped unseen.

        Elements of a pretty-printed array start on their own line, at the column of the broken
        element or left of it, after a comma; nested objects are indented further right.
        """
        column = broken - (self.text.rfind("\n", 0, broken) + 1)
        for match in _NEXT_OBJECT.finditer(self.text, broken + 1):
            if len(match.group(1)) > column or not self.after_comma(match.start()):
                continue
            candidate = match.end() - 1
            try:
                _, end = self.decoder.raw_decode(self.text, candidate)
            except json.JSONDecodeError:
                continue
            if self.text[self.skip_ws(end) : self.skip_ws(end) + 1] in (",", "]"):
                return candidate
        raise DataError(
            f"{self.name}: invalid JSON in the element at line {self.line_of(broken)}, and the "
            "elements after it can't be located; fix the file (or convert it to JSON lines, "
            "where a broken line costs only that line)"
        )

    def after_comma(self, pos: int) -> bool:
        while pos > 0 and self.text[pos - 1] in " \t\r\n":
            pos -= 1
        return pos > 0 and self.text[pos - 1] == ","

    def check_trailing(self, end: int) -> None:
        end = self.skip_ws(end)
        if end < len(self.text):
            raise DataError(
                f"{self.name}: extra data after the JSON value at line {self.line_of(end)}"
            )

    def check_record(self, value: Row, start: int, end: int, location: str) -> RowOrError:
        if end - start > self.limit:
            return row_error(location, TOO_LARGE, too_large(end - start, self.limit))
        i = bisect.bisect_left(self.bad_bytes, start)
        if i < len(self.bad_bytes) and self.bad_bytes[i] < end:
            bad = self.bad_bytes[i]
            byte = ord(self.text[bad]) - 0xDC00
            return row_error(
                location, "not UTF-8", f"byte 0x{byte:02x} on line {self.line_of(bad)}"
            )
        return value


READERS: dict[str, Callable[[Path, str, int], Iterator[tuple[str, RowOrError]]]] = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".csv": read_csv,
    ".tsv": read_tsv,
    ".parquet": read_parquet,
}
"""File readers by extension."""


# ----------------------------------------------------------------------------- helpers

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _looks_like_hub_id(path: str) -> bool:
    if not _HUB_ID.fullmatch(path) or path.startswith((".", "~")):
        return False
    return Path(path).suffix.lower() not in READERS


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )
