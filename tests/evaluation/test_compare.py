"""Paired comparison and the regression check."""

from __future__ import annotations

import pytest

from instructune.evaluation.compare import TaskOutcome, compare_task, regression
from instructune.evaluation.stats import mcnemar, paired_bootstrap


def _cls(correct: list[int], brier: list[float], ece: float) -> TaskOutcome:
    metrics = {
        "accuracy": sum(correct) / len(correct),
        "brier": sum(brier) / len(brier),
        "ece": ece,
        "n": len(correct),
        "confusion_matrix": [[1]],
        "labels": ["a"],
    }
    per_item = {"correct": [float(c) for c in correct], "brier": brier}
    return TaskOutcome("t", "classification", metrics, per_item, "accuracy")


def test_classification_comparison_uses_paired_tests() -> None:
    base = _cls([1, 0, 0, 1, 0, 0, 0, 0], [0.2, 0.9, 0.8, 0.1, 1.0, 0.7, 0.6, 0.9], 0.30)
    tuned = _cls([1, 1, 1, 1, 1, 1, 1, 0], [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.8], 0.10)
    comp = compare_task(base, tuned, seed=0, n_resamples=2000)
    acc = comp["accuracy"]
    assert acc["delta"] == pytest.approx(0.625)
    assert acc["p_value"] == mcnemar(base.per_item["correct"], tuned.per_item["correct"])["p_value"]
    assert acc["test"].startswith("mcnemar") and acc["better"] == "higher"
    boot = paired_bootstrap(
        base.per_item["brier"], tuned.per_item["brier"], n_resamples=2000, seed=0
    )
    assert comp["brier"]["p_value"] == boot["p_value"] and comp["brier"]["better"] == "lower"
    assert comp["ece"]["p_value"] is None and comp["ece"]["delta"] == pytest.approx(-0.2)
    assert "n" not in comp and "confusion_matrix" not in comp


def test_regression_direction_and_threshold() -> None:
    base = TaskOutcome("g", "loss", {"loss": 1.00}, {"loss": [1.0, 1.0]}, "loss")
    worse = TaskOutcome("g", "loss", {"loss": 1.05}, {"loss": [1.1, 1.0]}, "loss")
    comp = compare_task(base, worse, n_resamples=100)
    found = regression(comp, "loss", 0.02)
    assert found is not None and found["drop"] == pytest.approx(0.05)
    assert regression(comp, "loss", 0.1) is None
    better = compare_task(worse, base, n_resamples=100)
    assert regression(better, "loss", 0.0) is None  # a lower loss is never a regression
    acc_b = _cls([1, 1, 1, 1], [0.0] * 4, 0.0)
    acc_t = _cls([1, 1, 1, 0], [0.0] * 4, 0.0)
    reg = regression(compare_task(acc_b, acc_t, n_resamples=100), "accuracy", 0.2)
    assert reg is not None and reg["drop"] == pytest.approx(0.25)
