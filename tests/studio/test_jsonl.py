"""Big files stay cheap: a metrics log of 100k steps is read incrementally and sent downsampled,
a JSONL split is paged by byte offsets, and a line still being written waits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from instructune.studio.jsonl import LineIndex, MetricsSeries
from instructune.studio.launch import _progress_lines


def _write(path: Path, steps: range, mode: str = "a") -> None:
    with path.open(mode) as fh:
        for s in steps:
            record = {"step": s, "loss": 1.0 / s, "learning_rate": 1e-3}
            if s % 1000 == 0:
                record = {"step": s, "eval_loss": 2.0}
            fh.write(json.dumps(record) + "\n")


def test_metrics_of_100k_steps_are_downsampled_and_read_incrementally(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    _write(log, range(1, 100_001), "w")
    series = MetricsSeries(log)
    started = time.perf_counter()
    out = series.downsampled(2000)
    assert time.perf_counter() - started < 10
    assert out["rows"] == 100_000 and out["downsampled_from"] == 100_000
    columns = out["columns"]
    assert len(columns["step"]) == 2000 and columns["step"][-1] == 100_000
    assert columns["loss"][0] == pytest.approx(sum(1 / s for s in range(1, 51)) / 50)
    assert sum(v is not None for v in columns["eval_loss"]) == 100  # one eval per 1000 steps
    offset = out["offset"]
    with log.open("a") as fh:  # a step arrives, and half of the next one
        fh.write(json.dumps({"step": 100_001, "loss": 0.5}) + "\n" + '{"step": 100')
    assert series.last()["step"] == 100_001 and series.rows == 100_001
    assert series.offset > offset and series.offset < log.stat().st_size
    with log.open("a") as fh:
        fh.write('002, "loss": 0.25}\n')
    assert series.last() == {"step": 100_002, "loss": 0.25, "learning_rate": 1e-3, "eval_loss": 2.0}


def test_a_rewritten_log_is_read_again(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    _write(log, range(1, 11), "w")
    series = MetricsSeries(log)
    assert series.downsampled(100)["rows"] == 10
    _write(log, range(1, 4), "w")  # a new run in the same folder (--overwrite)
    assert series.downsampled(100)["columns"]["step"] == [1, 2, 3]


def test_line_index_pages_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(1000)) + '{"i": 10')
    index = LineIndex(path)
    assert len(index) == 1000  # the partial last line is not a row yet
    assert index.read(990, 20) == [(i + 1, {"i": i}) for i in range(990, 1000)]
    with path.open("a") as fh:
        fh.write("00}\n\n")
    assert len(index) == 1001 and index.read(1000, 5) == [(1001, {"i": 1000})]
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1: not valid JSON"):
        index.read(0, 1)


def test_launch_log_shows_progress_bars_as_a_terminal_does() -> None:
    assert _progress_lines("start\r 10%\r 50%\r100%\r\ndone\n") == "100%\ndone\n"
