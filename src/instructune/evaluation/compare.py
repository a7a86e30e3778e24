"""Base vs tuned on the same items: deltas, paired significance and the regression check.

Every metric that has a per-item value is tested paired, item against item: McNemar for
right/wrong outcomes (accuracy, stop rate), a paired bootstrap for continuous per-item values
(Brier, exact match, F1, ROUGE-L, per-item loss). Set-level metrics without a per-item value
(macro-F1, ECE, perplexity) get a delta only.

The regression check looks at one main metric per task (accuracy; the first generation metric;
minus the loss) on tasks marked `regression_check: true`, and flags a drop larger than
`eval.regression_threshold` (absolute, in the metric's own units; nats for loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# metric → (per-item key, test, higher is better)
_PAIRED: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("correct", "mcnemar", True),
    "brier": ("brier", "bootstrap", False),
    "exact_match": ("exact_match", "bootstrap", True),
    "f1": ("f1", "bootstrap", True),
    "rouge_l": ("rouge_l", "bootstrap", True),
    "stop_rate": ("stopped", "mcnemar", True),
    "loss": ("loss", "bootstrap", False),
    "margin": ("margin", "bootstrap", True),
}
_UNPAIRED_DIRECTION = {"macro_f1": True, "ece": False, "perplexity": False}


@dataclass
class TaskOutcome:
    """One model's result on one task: set-level metrics and per-item values for paired tests."""

    task: str
    type: str
    metrics: dict[str, Any]
    per_item: dict[str, list[float]] = field(default_factory=dict)
    main_metric: str = "accuracy"


def compare_task(
    base: TaskOutcome, tuned: TaskOutcome, seed: int = 0, n_resamples: int = 10000
) -> dict[str, Any]:
    """`{metric: {base, tuned, delta, p_value, test, better}}` for every comparable metric."""
    out: dict[str, Any] = {}
    for name, value in tuned.metrics.items():
        b = base.metrics.get(name)
        if not _is_number(value) or not _is_number(b) or _not_compared(name):
            continue
        entry: dict[str, Any] = {"base": b, "tuned": value, "delta": value - b}
        if name in _PAIRED:
            key, test, higher = _PAIRED[name]
            entry.update(
                _paired_test(
                    base.per_item.get(key), tuned.per_item.get(key), test, seed, n_resamples
                )
            )
        else:
            higher = _UNPAIRED_DIRECTION.get(name, True)
            entry.update({"test": None, "p_value": None})
        entry["better"] = "higher" if higher else "lower"
        out[name] = entry
    return out


def regression(comparison: dict[str, Any], metric: str, threshold: float) -> dict[str, Any] | None:
    """The main metric's drop when it exceeds `threshold`, else None.

    A drop is measured in the direction that is worse: for loss an *increase* is a drop.
    """
    entry = comparison.get(metric)
    if entry is None:
        return None
    higher = entry["better"] == "higher"
    drop = -entry["delta"] if higher else entry["delta"]
    if drop > threshold:
        return {
            "metric": metric,
            "base": entry["base"],
            "tuned": entry["tuned"],
            "drop": drop,
            "threshold": threshold,
            "p_value": entry.get("p_value"),
        }
    return None


def _paired_test(
    a: Sequence[float] | None, b: Sequence[float] | None, test: str, seed: int, n_resamples: int
) -> dict[str, Any]:
    from instructune.evaluation.stats import mcnemar, paired_bootstrap

    if not a or not b or len(a) != len(b):
        return {"test": None, "p_value": None}
    if test == "mcnemar":
        m = mcnemar([bool(x) for x in a], [bool(x) for x in b])
        return {
            "test": f"mcnemar ({m['method']})",
            "p_value": m["p_value"],
            "b": m["b"],
            "c": m["c"],
        }
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
    return {
        "test": "paired bootstrap",
        "p_value": boot["p_value"],
        "n_resamples": n_resamples,
        "ci95": [boot["ci_low"], boot["ci_high"]],
    }


def _not_compared(name: str) -> bool:
    return name in ("n", "n_tokens") or name.endswith("_stderr")


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)
