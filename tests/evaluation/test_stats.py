"""Tests for instructune.evaluation.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from instructune.evaluation import stats
from instructune.evaluation.stats import mcnemar, paired_bootstrap


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Build paired correctness vectors with the given 2x2 table counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_b3_c10() -> None:
    # b + c = 13 < 25 -> exact. P(X <= 3 | n=13, p=.5)
    #   = (C(13,0) + C(13,1) + C(13,2) + C(13,3)) / 2^13 = (1 + 13 + 78 + 286) / 8192 = 378/8192
    # p = 2 * 378 / 8192 = 756 / 8192 = 0.0922851...
    a, b = _pairs(both=5, only_a=3, only_b=10, neither=4)
    res = mcnemar(a, b)
    assert (res["b"], res["c"], res["method"]) == (3, 10, "exact")
    assert res["statistic"] == 3.0
    assert res["p_value"] == pytest.approx(756 / 8192)
    assert res["p_value"] == pytest.approx(binomtest(3, 13, 0.5).pvalue)


def test_mcnemar_exact_capped_at_one() -> None:
    # b = c = 2: 2 * P(X <= 2 | n=4) = 2 * (1 + 4 + 6) / 16 = 22/16 > 1 -> 1
    res = mcnemar(*_pairs(both=1, only_a=2, only_b=2, neither=1))
    assert res["p_value"] == 1.0


def test_mcnemar_chi2_b30_c12() -> None:
    # b + c = 42 >= 25 -> chi-square with continuity correction
    # stat = (|30 - 12| - 1)^2 / 42 = 17^2 / 42 = 289 / 42 = 6.880952...
    # chi2(1) survival: p = erfc(sqrt(stat / 2)) = erfc(sqrt(289/84)) = 0.0087119...
    a, b = _pairs(both=50, only_a=30, only_b=12, neither=8)
    res = mcnemar(a, b)
    assert (res["b"], res["c"], res["method"]) == (30, 12, "chi2_cc")
    assert res["statistic"] == pytest.approx(289 / 42)
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(289 / 84)))
    assert res["p_value"] == pytest.approx(0.0087119, abs=1e-6)


def test_mcnemar_threshold_and_symmetry() -> None:
    assert mcnemar(*_pairs(0, 12, 13, 0))["method"] == "chi2_cc"  # b + c = 25 -> chi2
    assert mcnemar(*_pairs(0, 11, 13, 0))["method"] == "exact"  # b + c = 24 -> exact
    ab = mcnemar(*_pairs(2, 3, 10, 1))
    a, b = _pairs(2, 3, 10, 1)
    ba = mcnemar(b, a)
    assert (ba["b"], ba["c"]) == (10, 3)
    assert ba["p_value"] == pytest.approx(ab["p_value"])


def test_mcnemar_no_discordant_pairs() -> None:
    res = mcnemar([1, 0, 1], [1, 0, 1])
    assert (res["b"], res["c"], res["p_value"]) == (0, 0, 1.0)


def test_mcnemar_validation() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        mcnemar([], [])
    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        mcnemar([2], [1])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_arrays() -> None:
    x = [0.1, 0.5, 0.9, 0.3]
    res = paired_bootstrap(x, x, n_resamples=500)
    # every per-example difference is 0, so every resampled mean is 0
    assert res == {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_bootstrap_hand_mean_and_bounds() -> None:
    # diffs b - a = [0.3, 0.0, 0.3] -> mean 0.6 / 3 = 0.2
    # every resampled mean lies in [min diff, max diff] = [0, 0.3]
    res = paired_bootstrap([0.2, 0.4, 0.6], [0.5, 0.4, 0.9], n_resamples=2000)
    assert res["mean_diff"] == pytest.approx(0.2)
    assert 0.0 <= res["ci_low"] <= 0.2 <= res["ci_high"] <= 0.3 + 1e-12
    # a resample is <= 0 only if all 3 draws hit the 0 diff: prob (1/3)^3 = 1/27
    # so p ~= 2/27 = 0.074 (loose tolerance for Monte Carlo error with 2000 draws)
    assert res["p_value"] == pytest.approx(2 / 27, abs=0.03)


def test_bootstrap_single_example() -> None:
    # N = 1: every resample is the single diff 1.0 -> CI (1, 1), none on the other side
    res = paired_bootstrap([0.0], [1.0], n_resamples=100)
    assert res == {"mean_diff": 1.0, "ci_low": 1.0, "ci_high": 1.0, "p_value": 0.0}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_bootstrap_clear_difference(sign: float) -> None:
    rng = np.random.default_rng(42)
    a = rng.uniform(0.3, 0.6, size=200)
    b = a + sign * (0.2 + rng.normal(0.0, 0.05, size=200))
    res = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    assert res["p_value"] < 0.01
    assert np.sign(res["mean_diff"]) == sign
    assert res["ci_low"] <= res["mean_diff"] <= res["ci_high"]
    assert not res["ci_low"] <= 0.0 <= res["ci_high"]  # CI excludes 0


def test_bootstrap_no_difference_is_not_significant() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(size=300)
    b = a + rng.normal(0.0, 0.1, size=300)
    b = b - (b - a).mean()  # force observed mean diff ~ 0
    res = paired_bootstrap(a, b, n_resamples=2000)
    assert res["p_value"] > 0.5
    assert res["ci_low"] < 0.0 < res["ci_high"]


def test_bootstrap_deterministic_with_seed() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    first = paired_bootstrap(a, b, n_resamples=1000, seed=11)
    assert paired_bootstrap(a, b, n_resamples=1000, seed=11) == first
    assert paired_bootstrap(a, b, n_resamples=1000, seed=12) != first


def test_bootstrap_chunking_gives_consistent_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.uniform(size=40), rng.uniform(size=40) + 0.05
    whole = paired_bootstrap(a, b, n_resamples=4000)
    # 100 elements per chunk -> 2 resamples per chunk, 2000 chunks
    monkeypatch.setattr(stats, "_BOOTSTRAP_CHUNK_ELEMENTS", 100)
    chunked = paired_bootstrap(a, b, n_resamples=4000)
    assert chunked["mean_diff"] == whole["mean_diff"]
    assert chunked["ci_low"] == pytest.approx(whole["ci_low"], abs=0.02)
    assert chunked["ci_high"] == pytest.approx(whole["ci_high"], abs=0.02)


def test_bootstrap_validation() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([float("nan")], [1.0])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([1.0], [1.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [1.0], confidence=1.0)
