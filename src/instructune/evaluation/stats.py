"""Paired significance tests for comparing two models on the same examples.

* :func:`mcnemar` for per-example correctness (accuracy-like metrics).
* :func:`paired_bootstrap` for per-example real-valued scores (F1, ROUGE-L, ...).
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = ["BootstrapResult", "McNemarResult", "mcnemar", "paired_bootstrap"]

# Below this many discordant pairs the chi-square approximation is poor, so we
# use the exact binomial test instead.
_MCNEMAR_EXACT_BELOW = 25
# Upper bound on resampled-index elements held in memory at once (~32 MiB of int64).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


class McNemarResult(TypedDict):
    """Result of :func:`mcnemar`."""

    b: int  # examples A got right and B got wrong
    c: int  # examples A got wrong and B got right
    statistic: float  # min(b, c) for "exact", the chi-square value for "chi2_cc"
    p_value: float
    method: Literal["exact", "chi2_cc"]


class BootstrapResult(TypedDict):
    """Result of :func:`paired_bootstrap`; all differences are B - A."""

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemarResult:
    """Two-sided McNemar test on paired per-example correctness of models A and B.

    With discordant counts b (A right, B wrong) and c (A wrong, B right):

    * ``b + c == 0``: no evidence either way, ``p_value = 1.0`` (method "exact").
    * ``b + c < 25``: exact binomial test,
      ``p = min(1, 2 · BinomCDF(min(b, c); b + c, 0.5))``, statistic = min(b, c).
    * otherwise: chi-square with continuity correction,
      ``statistic = (|b - c| - 1)² / (b + c)``, p from χ²(1) survival function.
    """
    a = _as_bool(correct_a, "correct_a")
    b_arr = _as_bool(correct_b, "correct_b")
    _check_same_length(a, b_arr, "correct_a", "correct_b")
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    n = b + c
    if n == 0:
        return McNemarResult(b=b, c=c, statistic=0.0, p_value=1.0, method="exact")
    if n < _MCNEMAR_EXACT_BELOW:
        k = min(b, c)
        p = min(1.0, 2.0 * float(sps.binom.cdf(k, n, 0.5)))
        return McNemarResult(b=b, c=c, statistic=float(k), p_value=p, method="exact")
    stat = (abs(b - c) - 1.0) ** 2 / n
    p = float(sps.chi2.sf(stat, df=1))
    return McNemarResult(b=b, c=c, statistic=float(stat), p_value=p, method="chi2_cc")


def paired_bootstrap(
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    n_resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap over examples for the mean score difference B - A.

    Each resample draws N example indices with replacement (the same indices for
    both models, which is what makes it paired) and records the mean of
    ``scores_b - scores_a``. Returns the observed mean difference, a percentile
    confidence interval at level ``confidence`` and a two-sided p-value: twice
    the share of resampled means on the other side of 0 from the observed mean
    (ties at 0 count as the other side), capped at 1; an observed difference of
    exactly 0 gives p = 1. Its resolution is ``1 / n_resamples``: 0.0 means
    "below that". Results are deterministic for a given ``seed``.
    """
    a = _as_float(scores_a, "scores_a")
    b = _as_float(scores_b, "scores_b")
    _check_same_length(a, b, "scores_a", "scores_b")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    diffs = b - a
    boot = _bootstrap_means(diffs, int(n_resamples), np.random.default_rng(seed))
    mean_diff = float(diffs.mean())
    alpha = 1.0 - confidence
    ci_low, ci_high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    if mean_diff > 0:
        p = 2.0 * float(np.mean(boot <= 0.0))
    elif mean_diff < 0:
        p = 2.0 * float(np.mean(boot >= 0.0))
    else:
        p = 1.0
    return BootstrapResult(
        mean_diff=mean_diff,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_value=min(1.0, p),
    )


def _bootstrap_means(
    diffs: NDArray[np.float64], n_resamples: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Means of ``n_resamples`` with-replacement resamples of ``diffs``, computed in chunks."""
    n = diffs.size
    # Chunk size depends only on n, so the random stream (and result) is seed-determined.
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = diffs[idx].mean(axis=1)
    return out


def _as_bool(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Convert to a 1-D boolean array, accepting only booleans or 0/1 values."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty")
    if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only booleans or 0/1 values")
    return arr.astype(np.bool_)


def _as_float(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Convert to a finite, non-empty 1-D float array."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def _check_same_length(a: NDArray[np.generic], b: NDArray[np.generic], na: str, nb: str) -> None:
    """Raise ValueError if the two arrays differ in length."""
    if a.size != b.size:
        raise ValueError(f"{na} and {nb} must have the same length, got {a.size} and {b.size}")
