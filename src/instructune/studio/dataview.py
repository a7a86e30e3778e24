"""A prepared dataset as the model sees it: each example's tokens, decoded one by one with the
tokenizer `prepare` used, each marked trained (label != -100), special or end-of-turn.

The examples are the rows `prepare --dump` writes (`prepared/train.jsonl`, `eval.jsonl`: aligned
input_ids and labels, `cut` when truncated); `summary.json` gives the dropped rows and their
reasons. Pages are read through a `LineIndex`, so a split of 1M examples costs one seek a page.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructune.models.labels import IGNORE_INDEX
from instructune.rundir import RunDir
from instructune.studio.jsonl import LineIndex

SPLITS = ("train", "eval")
FILTERS = ("all", "truncated", "dropped", "bins")
SCAN_LIMIT = 200_000
"""Rows a filter or search decodes and looks through (then cached); the page says when a
split has more."""
_BATCH = 512


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    trained: bool
    special: bool
    end_of_turn: bool


class PreparedFolder:
    """One output_dir's `prepared/`: summary, dumped splits, and the tokenizer that made them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.run = RunDir(folder).prepared
        self._indexes: dict[str, LineIndex] = {}
        self._matches: dict[tuple[str, str, str, int], tuple[list[int], bool]] = {}
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def summary(self) -> dict[str, Any]:
        data = json.loads(self.run.summary_file.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.run.split_file(s).is_file()]

    def index(self, split: str) -> LineIndex:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: choose one of {list(SPLITS)}")
        if split not in self._indexes:
            self._indexes[split] = LineIndex(self.run.split_file(split))
        return self._indexes[split]

    def tokenizer(self) -> Any:
        """The run's saved tokenizer when the folder is a training run, else its config's model's
        (what `prepare` loaded)."""
        with self._lock:
            if self._tokenizer is None:
                from instructune.bundle import load_run_tokenizer

                run = RunDir(self.folder)
                cfg = run.config()
                if cfg is None:
                    raise FileNotFoundError(
                        f"{run.config_file} is missing: can't tell which tokenizer prepared it"
                    )
                self._tokenizer = load_run_tokenizer(run if run.has_tokenizer else None, cfg.model)
            return self._tokenizer

    def page(
        self, split: str, start: int, count: int, show: str = "all", query: str = ""
    ) -> tuple[int, list[tuple[int, dict[str, Any]]], bool]:
        """(rows matching, [(line number, row)] for rows [start, start+count) of the matches,
        whether every row was looked at: a filter or search scans at most `SCAN_LIMIT`)."""
        index = self.index(split)
        if show == "all" and not query:
            return len(index), index.read(start, count), True
        lines, complete = self._match(split, show, query)
        rows = [r for i in lines[start : start + count] for r in index.read(i, 1)]
        return len(lines), rows, complete

    def _match(self, split: str, show: str, query: str) -> tuple[list[int], bool]:
        """Line numbers (from 0) of rows passing the filter whose text or source contains
        `query` (case-insensitive), and whether the scan saw every row; one scan, cached per
        file size (a growing file is rescanned)."""
        if show not in ("all", "truncated"):  # "dropped" and "bins" read other files
            raise ValueError(f"show {show!r}: choose one of {list(FILTERS)}")
        path = self.run.split_file(split)
        key = (split, show, query, path.stat().st_size)
        if key not in self._matches:
            found: list[int] = []
            batch: list[tuple[int, dict[str, Any]]] = []
            complete = True
            with path.open("rb") as fh:
                for i, line in enumerate(fh):
                    if i >= SCAN_LIMIT:
                        complete = False
                        break
                    batch.append((i, json.loads(line)))
                    if len(batch) >= _BATCH:
                        found += self._keep(batch, show, query.lower())
                        batch = []
            found += self._keep(batch, show, query.lower())
            self._matches = {key: (found, complete)}  # one cached scan: memory stays bounded
        return self._matches[key]

    def _keep(self, batch: list[tuple[int, dict[str, Any]]], show: str, needle: str) -> list[int]:
        """The rows of `batch` that `show` and the search keep, by their text (decoded in
        batches by the tokenizer). A truncated row either lost its first tokens (`cut`) or had
        prompt text cut out of its middle, marked by `data.truncation.CUT_MARKER`."""
        if not batch:
            return []
        from instructune.data.truncation import CUT_MARKER

        texts = self.tokenizer().batch_decode([row["input_ids"] for _, row in batch])
        return [
            i
            for (i, row), text in zip(batch, texts, strict=True)
            if (show == "all" or row.get("cut") or CUT_MARKER in text)
            and (needle in text.lower() or needle in str(row.get("source", "")).lower())
        ]

    def bins(self, split: str, start: int, count: int) -> tuple[int, list[dict[str, Any]]]:
        """(packed rows, [{"bin": number from 1, "examples": [(line, row)]}]) for packed rows
        [start, start+count), from `prepare --dump`'s bins file (none without packing)."""
        path = self.run.bins_file(split)
        if not path.is_file():
            return 0, []
        key = f"{split}_bins"
        if key not in self._indexes:
            self._indexes[key] = LineIndex(path)
        bins, examples = self._indexes[key], self.index(split)
        out = []
        for number, packed in bins.read(start, count):
            rows = [r for i in packed.get("examples", []) for r in examples.read(int(i), 1)]
            out.append({"bin": number, "examples": rows})
        return len(bins), out

    def tokens(self, row: dict[str, Any]) -> list[Token]:
        from instructune.data.templates import end_of_turn_ids

        tok = self.tokenizer()
        ids, labels = row.get("input_ids"), row.get("labels")
        if not isinstance(ids, list) or not isinstance(labels, list) or len(ids) != len(labels):
            raise ValueError("a prepared row needs input_ids and labels of the same length")
        specials = set(tok.all_special_ids)
        eot = end_of_turn_ids(tok)
        return [
            Token(
                int(i),
                tok.decode([int(i)], skip_special_tokens=False),
                int(label) != IGNORE_INDEX,
                int(i) in specials,
                int(i) in eot,
            )
            for i, label in zip(ids, labels, strict=True)
        ]


def dropped_rows(summary: dict[str, Any], start: int, count: int) -> tuple[int, list[Any]]:
    rows = summary.get("dropped_rows") or []
    return len(rows), rows[start : start + count]


def notes(summary: dict[str, Any]) -> list[str]:
    """Kept-with-a-note counts per source (`adjusted`: rows changed, not dropped) and truncation."""
    out = []
    for src in summary.get("sources") or []:
        for note, n in sorted((src.get("adjusted") or {}).items()):
            out.append(f"{src.get('path')}: {n} kept with a note ({note})")
    if summary.get("truncated"):
        out.append(f"{summary['truncated']} examples truncated to fit max_length (kept)")
    return out
