"""Mixing: examples-proportional with caps, explicit weights and counts, the realised report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .helpers import build, read_rows, sentences, table_source, write_csv


def sources(tmp_path: Path, sizes: dict[str, int], **extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, n in sizes.items():
        rows = [{**r, "text": f"{name} {r['text']}"} for r in sentences(n)]
        data = write_csv(tmp_path / f"{name}.csv", rows)
        out.append({**table_source(data), "name": name, **extra.get(name, {})})
    return out


def composition(path: Path) -> Counter[str]:
    return Counter(r["meta"]["source"] for r in read_rows(path / "train.jsonl"))


def test_examples_proportional_with_a_cap(tmp_path: Path) -> None:
    result = build(tmp_path, sources(tmp_path, {"a": 40, "b": 10}, a={"max_examples": 25}))
    assert composition(result.out_dir) == {"a": 25, "b": 10}
    mixture = {m.source: m for m in result.report.mixture}
    assert mixture["a"].requested == "cap 25" and mixture["a"].realised_share == pytest.approx(
        25 / 35
    )


def test_count_upsamples_whole_passes_then_a_remainder(tmp_path: Path) -> None:
    result = build(tmp_path, sources(tmp_path, {"a": 10, "b": 6}, b={"count": 15}))
    rows = read_rows(result.out_dir / "train.jsonl")
    b_rows = Counter(r["meta"]["index"] for r in rows if r["meta"]["source"] == "b")
    assert sum(b_rows.values()) == 15 and set(b_rows) == set(range(6))
    assert sorted(b_rows.values()) == [2, 2, 2, 3, 3, 3]


def test_weights_share_what_the_other_sources_leave(tmp_path: Path) -> None:
    result = build(tmp_path, sources(tmp_path, {"a": 30, "b": 40}, b={"weight": 0.25}))
    assert composition(result.out_dir) == {"a": 30, "b": 10}
    every = build(
        tmp_path, sources(tmp_path, {"a": 30, "b": 40}, a={"weight": 0.5}, b={"weight": 0.5}), "w"
    )
    assert composition(every.out_dir) == {"a": 30, "b": 30}


def test_weights_leaving_no_room_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights add up to 1, leaving no room"):
        build(tmp_path, sources(tmp_path, {"a": 5, "b": 5}, b={"weight": 1.0}))
