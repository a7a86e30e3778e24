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
import csv
import difflib
import errno
import itertools
import json
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from instructune.config.schema import DataSource
from instructune.data.conversation import DataError, RowError, row_error

Row = dict[str, Any]
RowOrError = Row | RowError

__all__ = ["READERS", "Row", "RowOrError", "iter_json_lines", "iter_rows", "unreadable_reason"]


def iter_json_lines(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, "path:line", value) per non-blank JSONL line, for files that are not data
    sources (prompts, seed tasks); a line that isn't JSON raises naming file and line."""
    reason = unreadable_reason(path)
    if reason:
        raise ValueError(f"{path}: {reason}")
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield n, f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: invalid JSON ({err.msg})") from None


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
        return READERS[suffix](path, source.path)
    if _looks_like_hub_id(source.path):
        from instructune.data.hub import read_hub  # lazy: only Hub dataset ids

        return read_hub(source.path, source.split)
    raise DataError(missing_message(path, source.path))


# ----------------------------------------------------------------------------- JSON lines


def _read_jsonl(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    # Binary lines, decoded one at a time: a bad byte costs that line only, and nothing but the
    # current line is held in memory.
    with path.open("rb") as f:
        seen_row = False
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue  # blank lines aren't rows
            location = f"{name}:line {number}"
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


def _read_json(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    """A JSON array of objects, an object with one list-of-objects field, or one object.

    Many datasets name JSON-lines files `.json`; those are read line by line. The text is held
    once; objects are decoded one element at a time so the parsed rows aren't held as well.
    """
    if _is_json_lines(path):
        yield from _read_jsonl(path, name)
        return
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: file is UTF-16; save it as UTF-8")
    # surrogateescape keeps positions exact; rows holding an escaped byte are reported below.
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    del raw
    yield from _JsonText(text, name).rows()


def _is_json_lines(path: Path) -> bool:
    """A one-line object followed by a line starting another: JSON lines named `.json`."""
    with path.open("rb") as f:
        lines = (line.strip() for line in f)
        first = next((line for line in lines if line), b"").removeprefix(b"\xef\xbb\xbf")
        second = next((line for line in lines if line), b"")
    return first[:1] == b"{" and first[-1:] == b"}" and second[:1] == b"{"


_WS = re.compile(r"[ \t\n\r]*")
_NEXT_OBJECT = re.compile(r"\n([ \t]*)\{")
_BAD_BYTE = re.compile("[\udc80-\udcff]")


class _JsonText:
    """Walks a JSON document's text with `raw_decode`, tracking line numbers of positions."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.decoder = json.JSONDecoder()
        self.bad_bytes = [m.start() for m in _BAD_BYTE.finditer(text)]
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
        yield location, self.check_bytes(value, pos, end, location)

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
                yield location, self.check_bytes(value, start, self.end, location)

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

    def check_bytes(self, value: Row, start: int, end: int, location: str) -> RowOrError:
        i = bisect.bisect_left(self.bad_bytes, start)
        if i < len(self.bad_bytes) and self.bad_bytes[i] < end:
            bad = self.bad_bytes[i]
            byte = ord(self.text[bad]) - 0xDC00
            return row_error(
                location, "not UTF-8", f"byte 0x{byte:02x} on line {self.line_of(bad)}"
            )
        return value


# ----------------------------------------------------------------------------- tables


def _read_csv(path: Path, name: str, delimiter: str = ",") -> Iterator[tuple[str, RowOrError]]:
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: empty file (no header row)")
        if any(_BAD_BYTE.search(h) for h in header):
            raise DataError(f"{name}: the header row is not UTF-8; save the file as UTF-8")
        line = reader.line_num
        for fields in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines
            if not fields or fields == [""]:
                continue
            location = f"{name}:line {start}"
            if len(fields) != len(header):
                yield (
                    location,
                    row_error(
                        location,
                        "wrong number of fields",
                        f"{len(fields)} fields, the header has {len(header)}",
                    ),
                )
            elif bad := [h for h, v in zip(header, fields, strict=True) if _BAD_BYTE.search(v)]:
                yield location, row_error(location, "not UTF-8", f"in column {bad[0]!r}")
            else:
                yield location, dict(zip(header, fields, strict=True))


def _read_tsv(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    return _read_csv(path, name, delimiter="\t")


def _read_parquet(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    import pyarrow.parquet as pq  # lazy: pyarrow is heavy and most runs read JSON

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends for non-parquet bytes
        raise DataError(f"{name}: not a readable Parquet file ({e})") from e
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield f"{name}:row {number}", row


READERS: dict[str, Callable[[Path, str], Iterator[tuple[str, RowOrError]]]] = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".parquet": _read_parquet,
}
"""File readers by extension."""


# ----------------------------------------------------------------------------- helpers

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _looks_like_hub_id(path: str) -> bool:
    if not _HUB_ID.fullmatch(path) or path.startswith((".", "~")):
        return False
    return Path(path).suffix.lower() not in READERS


_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def unreadable_reason(path: Path) -> str | None:
    """Why `path` exists but can't be read as data (a FIFO, device, socket, symlink loop), or None.

    Only `stat` is called: opening a FIFO would wait for a writer forever, and a device such as
    /dev/zero never ends.
    """
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (a link that leads back to itself); point it at a file"
        if path.is_symlink():
            return f"is a symbolic link to {path.readlink()}, which doesn't exist"
        return None  # missing: the caller's "no such file" message says so
    for test, what in _SPECIAL:
        if test(mode):
            return (
                f"is {what}, not a regular file; data must be a file or folder that can be read "
                "to its end and read again (write the data to a file first)"
            )
    return None


def missing_message(path: Path, name: str) -> str:
    message = f"{name}: no such file or folder locally ({path.absolute()})"
    if not path.parent.is_dir():
        return f"{message}; the folder {path.parent} doesn't exist either"
    names = [p.name for p in path.parent.iterdir()]
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {', '.join(str(path.parent / c) for c in close)}?"
    return message


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )
