"""The Data page's reading of `prepared/`: search by text or source, and a scan that stops at
`SCAN_LIMIT` says so."""

from __future__ import annotations

import json

import pytest

from instructune.studio import dataview

from .conftest import Built


def test_search_and_the_scan_limit(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = dataview.PreparedFolder(built.root / built.run)
    lines = (built.root / built.run / "prepared" / "train.jsonl").read_text().splitlines()
    # every answer but the summary's ("Words.") starts "It is"
    total, rows, complete = prepared.page("train", 0, 100, "all", "it IS")
    assert complete and total == 11 and [n for n, _ in rows] == list(range(1, 12))
    assert rows[0][1] == json.loads(lines[0])
    total, rows, complete = prepared.page("train", 2, 3, "all", "it is")  # a later page
    assert (total, [n for n, _ in rows]) == (11, [3, 4, 5])
    monkeypatch.setattr(dataview, "SCAN_LIMIT", 4)
    total, rows, complete = prepared.page("train", 0, 100, "truncated", "")
    assert not complete and total == 0  # the truncated row is past the first 4
    with pytest.raises(ValueError, match="show 'dropped'"):
        prepared.page("train", 0, 10, "dropped", "")


def test_packed_rows_hold_every_example_once(built: Built) -> None:
    prepared = dataview.PreparedFolder(built.root / built.run)
    n_examples = len(prepared.index("train"))
    total, bins = prepared.bins("train", 0, 1000)
    summary = prepared.summary()
    assert total == summary["splits"]["train"]["packed_rows"] == len(bins) > 1
    lines = sorted(line for b in bins for line, _ in b["examples"])
    assert lines == list(range(1, n_examples + 1))
    for b in bins:  # each packed row fits the context
        assert sum(len(row["input_ids"]) for _, row in b["examples"]) <= 64
