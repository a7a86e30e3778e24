"""Tests for instructune.evaluation.calibration against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instructune.evaluation.calibration import (
    ReliabilityBin,
    ece_from_bins,
    expected_calibration_error,
    plot_reliability_diagram,
    reliability_bins,
)

CONF = [0.9, 0.6, 0.8, 0.55, 0.95, 0.7]
CORRECT = [1, 0, 1, 1, 0, 1]


def test_ece_equal_mass_three_bins() -> None:
    # sorted: 0.55(1) 0.6(0) | 0.7(1) 0.8(1) | 0.9(1) 0.95(0)
    # bin 1: conf 0.575, acc 0.5 -> gap 0.075
    # bin 2: conf 0.75,  acc 1.0 -> gap 0.25
    # bin 3: conf 0.925, acc 0.5 -> gap 0.425
    # ECE = (2/6) * (0.075 + 0.25 + 0.425) = 0.75 / 3 = 0.25
    bins = reliability_bins(CONF, CORRECT, n_bins=3)
    assert [b.count for b in bins] == [2, 2, 2]
    assert [b.confidence for b in bins] == pytest.approx([0.575, 0.75, 0.925])
    assert [b.accuracy for b in bins] == pytest.approx([0.5, 1.0, 0.5])
    assert expected_calibration_error(CONF, CORRECT, n_bins=3) == pytest.approx(0.25)


def test_ece_equal_width() -> None:
    # 2 bins: [0, 0.5) is empty; [0.5, 1] holds all 6.
    # mean conf = (0.9+0.6+0.8+0.55+0.95+0.7)/6 = 4.5/6 = 0.75, acc = 4/6
    # ECE = |0.75 - 0.6667| = 1/12
    ece = expected_calibration_error(CONF, CORRECT, n_bins=2, strategy="equal_width")
    assert ece == pytest.approx(1 / 12)
    # 10 bins on off-boundary values:
    # [.5,.6): .55 ok  gap .45 | [.6,.7): .62 wrong gap .62 | [.7,.8): .71 ok gap .29
    # [.8,.9): .81 ok gap .19 | [.9,1]: .91 ok, .97 wrong -> conf .94, acc .5, gap .44
    # ECE = (.45+.62+.29+.19)/6 + 2*.44/6 = 2.43/6 = 0.405
    conf = [0.55, 0.62, 0.71, 0.81, 0.91, 0.97]
    corr = [True, False, True, True, True, False]
    bins = reliability_bins(conf, corr, n_bins=10, strategy="equal_width")
    assert [b.count for b in bins] == [1, 1, 1, 1, 2]
    assert expected_calibration_error(conf, corr, 10, "equal_width") == pytest.approx(0.405)


def test_equal_width_boundaries() -> None:
    # Bins are [i/10, (i+1)/10); 0.3 starts bin 3 and 1.0 belongs to the last bin.
    bins = reliability_bins([0.3, 0.39, 1.0], [1, 0, 1], n_bins=10, strategy="equal_width")
    assert [(b.count, b.confidence) for b in bins] == [(2, pytest.approx(0.345)), (1, 1.0)]


def test_equal_mass_chunk_sizes_and_too_many_bins() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(size=25)
    correct = rng.uniform(size=25) < conf
    # np.array_split: 25 = 5 chunks of 3 + 5 chunks of 2
    assert [b.count for b in reliability_bins(conf, correct)] == [3] * 5 + [2] * 5
    # more bins than examples: empty chunks are skipped, one example per bin
    bins = reliability_bins([0.2, 0.9, 0.5], [0, 1, 1], n_bins=10)
    assert [(b.confidence, b.accuracy, b.count) for b in bins] == [
        (0.2, 0.0, 1),
        (0.5, 1.0, 1),
        (0.9, 1.0, 1),
    ]


def test_ece_perfect_and_worst() -> None:
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [False, False]) == 1.0


def test_ece_from_bins() -> None:
    # (3/4)*|0.5-0.6| + (1/4)*|1.0-0.9| = 0.075 + 0.025 = 0.1
    bins = [ReliabilityBin(0.6, 0.5, 3), ReliabilityBin(0.9, 1.0, 1)]
    assert ece_from_bins(bins) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="at least one example"):
        ece_from_bins([])


@pytest.mark.parametrize(
    ("conf", "correct", "kwargs", "message"),
    [
        ([], [], {}, "non-empty"),
        ([0.5, 0.6], [1], {}, "same length"),
        ([1.5], [1], {}, r"within \[0, 1\]"),
        ([float("nan")], [1], {}, "finite"),
        ([0.5], [2], {}, "booleans or 0/1"),
        ([0.5], [1], {"n_bins": 0}, "positive integer"),
        ([0.5], [1], {"strategy": "quantile"}, "equal_mass, equal_width"),
    ],
)
def test_ece_validation(
    conf: list[float], correct: list[int], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(conf, correct, **kwargs)  # type: ignore[arg-type]


def test_plot_reliability_diagram_two_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 200
    conf = rng.uniform(0.3, 1.0, size=n)
    base = reliability_bins(conf, rng.uniform(size=n) < conf - 0.2, n_bins=10)
    tuned = reliability_bins(conf, rng.uniform(size=n) < conf, n_bins=10, strategy="equal_width")
    assert sum(b.count for b in base) == n
    assert sum(b.count for b in tuned) == n
    out = plot_reliability_diagram({"base": base, "tuned": tuned}, tmp_path / "sub" / "rel.png")
    assert out.exists()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reliability_diagram_one_model_and_errors(tmp_path: Path) -> None:
    bins = reliability_bins(CONF, CORRECT, n_bins=3)
    out = plot_reliability_diagram({"model": bins}, str(tmp_path / "one.png"), title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="1 or 2 models"):
        plot_reliability_diagram({"a": bins, "b": bins, "c": bins}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 or 2 models"):
        plot_reliability_diagram({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no bins"):
        plot_reliability_diagram({"a": []}, tmp_path / "x.png")
