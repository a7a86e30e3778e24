"""Evaluation: option scoring, generation, eval loss, base-vs-tuned comparison and reports.

Importing this package is cheap (no torch, no matplotlib): `run_eval` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instructune.evaluation.run import EvalResult, run_eval

__all__ = ["EvalResult", "run_eval"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from instructune.evaluation import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
