"""Calibration metrics (ECE) and reliability diagrams; the Brier score is per item, in scoring.py.

Conventions used throughout:

* ``confidence`` of a prediction is its maximum predicted class probability and
  ``correct`` is ``argmax(probs) == true_index``.
* Binning is shared by :func:`expected_calibration_error` and
  :func:`plot_reliability_diagram` through :func:`reliability_bins`, so the
  number printed in a report and the picture always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BinStrategy",
    "ReliabilityBin",
    "ece_from_bins",
    "expected_calibration_error",
    "plot_reliability_diagram",
    "reliability_bins",
]

BinStrategy = Literal["equal_mass", "equal_width"]
_STRATEGIES: tuple[str, ...] = ("equal_mass", "equal_width")


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One non-empty bin of a reliability diagram."""

    confidence: float  # mean confidence of the examples in the bin
    accuracy: float  # fraction of correct examples in the bin
    count: int  # number of examples in the bin


def reliability_bins(
    confidences: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "equal_mass",
) -> list[ReliabilityBin]:
    """Group predictions into confidence bins; return the non-empty bins in increasing order.

    Strategies:

    * ``"equal_mass"`` (default): stable-sort examples by confidence and split the
      sorted order into ``n_bins`` contiguous chunks with ``np.array_split``
      (the first ``N % n_bins`` chunks get one extra example). Examples with tied
      confidence may land in adjacent bins. If ``n_bins > N`` the empty chunks
      are skipped.
    * ``"equal_width"``: bin ``i`` covers ``[i/n_bins, (i+1)/n_bins)``, the last
      bin also includes 1.0. Empty bins are skipped.

    The counts of the returned bins always sum to N.
    """
    conf, corr = _check_conf_correct(confidences, correct)
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "equal_mass":
        order = np.argsort(conf, kind="stable")
        groups = [idx for idx in np.array_split(order, n_bins) if idx.size > 0]
    elif strategy == "equal_width":
        # i / n_bins is correctly rounded, so a boundary value such as 0.3 equals
        # its edge exactly and lands in the bin that starts at it; np.linspace
        # would give 0.30000000000000004 and push 0.3 into the previous bin.
        edges = np.arange(n_bins + 1) / n_bins
        bin_ids = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
        groups = [np.flatnonzero(bin_ids == b) for b in range(n_bins)]
        groups = [idx for idx in groups if idx.size > 0]
    else:
        raise ValueError(f"Unknown binning strategy {strategy!r}; valid: {', '.join(_STRATEGIES)}")
    return [
        ReliabilityBin(
            confidence=float(conf[idx].mean()),
            accuracy=float(corr[idx].mean()),
            count=int(idx.size),
        )
        for idx in groups
    ]


def ece_from_bins(bins: Sequence[ReliabilityBin]) -> float:
    """ECE = Σ_b (|B_b| / N) · |acc(B_b) - conf(B_b)| over the given bins."""
    total = sum(b.count for b in bins)
    if total == 0:
        raise ValueError("bins must contain at least one example")
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins))


def expected_calibration_error(
    confidences: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "equal_mass",
) -> float:
    """Compute the expected calibration error with bins from :func:`reliability_bins`.

    ``confidences`` are max predicted probabilities in [0, 1]; ``correct`` are
    booleans (argmax == true label). Returns a value in [0, 1]; 0 is perfect.
    """
    return ece_from_bins(reliability_bins(confidences, correct, n_bins, strategy))


def plot_reliability_diagram(
    bins_by_model: Mapping[str, Sequence[ReliabilityBin]],
    path: str | Path,
    title: str = "Reliability diagram",
) -> Path:
    """Write a reliability diagram PNG for one or two models (e.g. base vs tuned).

    Top panel: accuracy vs mean confidence per bin with the y = x diagonal; the
    legend shows each model's ECE and N. Bottom panel: examples per bin. Returns
    the written path (parent directories are created).
    """
    if not 1 <= len(bins_by_model) <= 2:
        raise ValueError(f"expected 1 or 2 models, got {len(bins_by_model)}")
    for name, bins in bins_by_model.items():
        if not bins:
            raise ValueError(f"model {name!r} has no bins")
    # Object-oriented API with an explicit Agg canvas: no pyplot global state and
    # no dependency on the user's configured (possibly GUI) backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 7.0))
    FigureCanvasAgg(fig)
    ax_acc, ax_cnt = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax_acc.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    # Bars share the x axis with the points; size them so the models' bars sit
    # side by side without overlapping neighbouring bins.
    max_bins = max(len(bins) for bins in bins_by_model.values())
    width = 0.6 / (max(max_bins, 10) * len(bins_by_model))
    for i, (name, bins) in enumerate(bins_by_model.items()):
        conf = [b.confidence for b in bins]
        acc = [b.accuracy for b in bins]
        counts = [b.count for b in bins]
        label = f"{name} (ECE={ece_from_bins(bins):.3f}, N={sum(counts)})"
        ax_acc.plot(conf, acc, marker="o", color=f"C{i}", label=label)
        # Offset the two models' count bars so they do not hide each other.
        offset = (i - (len(bins_by_model) - 1) / 2) * width
        ax_cnt.bar([c + offset for c in conf], counts, width=width, color=f"C{i}", alpha=0.7)
    ax_acc.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax_acc.legend(loc="upper left", fontsize="small")
    ax_acc.grid(alpha=0.3)
    ax_cnt.set(xlabel="mean confidence", ylabel="count")
    ax_cnt.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


# ---------------------------------------------------------------------------- helpers


def _check_conf_correct(
    confidences: ArrayLike, correct: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate 1-D, equal-length, non-empty inputs; return (conf, correct as 0/1 floats)."""
    conf = np.asarray(confidences, dtype=np.float64)
    corr_raw = np.asarray(correct)
    if conf.ndim != 1 or corr_raw.ndim != 1:
        raise ValueError("confidences and correct must be 1-D")
    if conf.shape != corr_raw.shape:
        raise ValueError(
            f"confidences and correct must have the same length, got {conf.size} and "
            f"{corr_raw.size}"
        )
    if conf.size == 0:
        raise ValueError("confidences and correct must be non-empty")
    if not np.all(np.isfinite(conf)) or conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError("confidences must be finite and within [0, 1]")
    corr = corr_raw.astype(np.float64)
    if not np.all((corr == 0.0) | (corr == 1.0)):
        raise ValueError("correct must contain only booleans or 0/1 values")
    return conf, corr
