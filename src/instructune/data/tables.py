"""CSV, TSV and Parquet readers: one row dict per record, located by file and line (or row)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from instructune.data.conversation import DataError, RowError, row_error
from instructune.data.file_limits import TOO_LARGE, bounded_lines, too_large

__all__ = ["BAD_BYTE", "read_csv", "read_parquet", "read_tsv"]

BAD_BYTE = re.compile("[\udc80-\udcff]")
"""A byte that isn't UTF-8, kept by `errors="surrogateescape"` as a lone surrogate."""


def read_csv(
    path: Path, name: str, limit: int, delimiter: str = ","
) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        # csv has no per-reader cell limit, only this process-wide one (default 128 KiB)
        csv.field_size_limit(limit)
        reader = csv.reader(_csv_lines(f, name, limit), delimiter=delimiter)
        header = _next_record(reader, name, 0)
        if header is None:
            raise DataError(f"{name}: empty file (no header row)")
        if any(BAD_BYTE.search(h) for h in header):
            raise DataError(f"{name}: the header row is not UTF-8; save the file as UTF-8")
        line = reader.line_num
        while (fields := _next_record(reader, name, line)) is not None:
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
            elif bad := [h for h, v in zip(header, fields, strict=True) if BAD_BYTE.search(v)]:
                yield location, row_error(location, "not UTF-8", f"in column {bad[0]!r}")
            else:
                yield location, dict(zip(header, fields, strict=True))


def _csv_lines(f: IO[str], name: str, limit: int) -> Iterator[str]:
    """The file's lines, each at most `limit` characters (a longer one stops the read, naming it:
    csv can't be resynchronised inside a record)."""
    for number, (line, size) in enumerate(bounded_lines(f, limit, "\n"), start=1):
        if line is None:
            raise DataError(f"{name}:line {number}: {TOO_LARGE}: {too_large(size, limit)}")
        yield line


def _next_record(reader: Any, name: str, line: int) -> list[str] | None:
    try:
        return next(reader, None)  # type: ignore[no-any-return]
    except csv.Error as e:  # a cell over csv.field_size_limit, a NUL byte, ...
        raise DataError(
            f"{name}:line {line + 1}: {e} (a cell's limit is max_record_bytes on the data source)"
        ) from None


def read_tsv(path: Path, name: str, limit: int) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    return read_csv(path, name, limit, delimiter="\t")


def read_parquet(
    path: Path, name: str, limit: int
) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    """Read in batches of rows, so memory follows the batch, not the file (`limit` is not
    applied: Parquet stores columns, not records)."""
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
