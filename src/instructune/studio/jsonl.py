"""Large JSONL files read a page or a tail at a time: a prepared split of 1M examples, a
metrics log of 100k steps.

`LineIndex` keeps the byte offset of every line start (8 bytes a line) and extends itself as the
file grows, so a page is one seek and a few reads. `MetricsSeries` parses a growing
`metrics.jsonl` incrementally (only the bytes appended since the last call) into columns and
serves them downsampled to at most N points per series, which keeps a chart of 100k steps light.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


class LineIndex:
    """Byte offsets of the complete lines of a JSONL file (a partial last line is left out)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._starts: list[int] = []
        self._end = 0  # bytes indexed so far: the start of the next line
        self._lock = threading.Lock()

    def __len__(self) -> int:
        self.refresh()
        return len(self._starts)

    def refresh(self) -> None:
        with self._lock:
            size = self.path.stat().st_size
            if size < self._end:  # rewritten: start over
                self._starts, self._end = [], 0
            if size == self._end:
                return
            with self.path.open("rb") as fh:
                fh.seek(self._end)
                pos, pending = self._end, b""
                while chunk := fh.read(_CHUNK):
                    data = pending + chunk
                    base = pos - len(pending)
                    cut = 0
                    while (nl := data.find(b"\n", cut)) != -1:
                        if nl > cut:  # skip blank lines
                            self._starts.append(base + cut)
                        cut = nl + 1
                    pending = data[cut:]
                    pos += len(chunk)
                self._end = pos - len(pending)

    def read(self, start: int, count: int) -> list[tuple[int, Any]]:
        """(line number from 1, parsed JSON) of lines [start, start + count)."""
        self.refresh()
        starts = self._starts[start : start + count]
        out = []
        with self.path.open("rb") as fh:
            for i, offset in enumerate(starts, start):
                fh.seek(offset)
                line = fh.readline()
                try:
                    out.append((i + 1, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.path}:{i + 1}: not valid JSON ({err})") from None
        return out


@dataclass
class MetricsSeries:
    """Columns of a growing metrics.jsonl: `step` plus one float array per numeric key (NaN where
    a record lacks it); train records and eval records (`eval_*` keys) share the step axis."""

    path: Path
    offset: int = 0
    columns: dict[str, list[float]] = field(default_factory=dict)
    rows: int = 0
    bad_lines: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        with self._lock:
            size = self.path.stat().st_size
            if size < self.offset:
                self.offset, self.columns, self.rows = 0, {}, 0
            if size == self.offset:
                return
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
            cut = data.rfind(b"\n") + 1  # a line still being written waits for the next call
            for line in data[:cut].splitlines():
                if line.strip():
                    self._add(line)
            self.offset += cut

    def _add(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            self.bad_lines += 1
            return
        if not isinstance(record, dict) or not isinstance(record.get("step"), int | float):
            return
        for key, value in record.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            column = self.columns.get(key)
            if column is None:
                column = self.columns[key] = [float("nan")] * self.rows
            column.append(float(value))
        self.rows += 1
        for column in self.columns.values():
            if len(column) < self.rows:
                column.append(float("nan"))

    def downsampled(self, max_points: int) -> dict[str, Any]:
        """Every column at most `max_points` long: bucket means for a long run (NaN-aware), the
        last record always kept so the chart ends where the run is now."""
        self.refresh()
        n = self.rows
        out: dict[str, Any] = {"rows": n, "offset": self.offset, "bad_lines": self.bad_lines}
        if n == 0:
            out["columns"] = {}
            return out
        if n <= max_points:
            out["columns"] = {k: [_num(x) for x in v] for k, v in self.columns.items()}
            return out
        edges = np.linspace(0, n, max_points + 1).astype(np.int64)
        columns = {}
        for key, values in self.columns.items():
            arr = np.asarray(values, dtype=np.float64)
            if key == "step":
                picked = arr[np.maximum(edges[1:] - 1, 0)]
            else:
                sums = np.add.reduceat(np.nan_to_num(arr), edges[:-1])
                counts = np.add.reduceat(~np.isnan(arr), edges[:-1])
                with np.errstate(invalid="ignore", divide="ignore"):
                    picked = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            columns[key] = [_num(x) for x in picked.tolist()]
        out["columns"] = columns
        out["downsampled_from"] = n
        return out

    def last(self) -> dict[str, float]:
        """The last non-NaN value of every column."""
        self.refresh()
        out = {}
        for key, values in self.columns.items():
            for value in reversed(values):
                if value == value:
                    out[key] = value
                    break
        return out


def _num(x: float) -> float | None:
    return None if x != x else x
