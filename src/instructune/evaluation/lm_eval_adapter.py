"""lm-evaluation-harness on the model already in memory (optional extra `instructune[lmeval]`).

`run_lm_eval(model, tokenizer, tasks)` wraps the loaded model (base, or base + adapter) in lm-eval's
`HFLM` without reloading it, and runs registry task names or task config dicts. Local data needs no
Hub: a dict task with `dataset_path: json` reads a JSONL file (the tests build one this way).
Only dict tasks: the builtin task registry (thousands of YAML files, ~15 s to index) is skipped.

lm-eval is imported lazily; without it the functions raise `LmEvalMissing` saying what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

INSTALL_HINT = "pip install 'instructune[lmeval]'  (lm-eval==0.4.13)"


class LmEvalMissing(ImportError):
    """lm-evaluation-harness is not installed."""


def require_lm_eval() -> Any:
    """The `lm_eval` module, or LmEvalMissing with the install command."""
    try:
        return importlib.import_module("lm_eval")
    except ImportError as err:
        raise LmEvalMissing(
            f"lm-evaluation-harness is not installed ({err}); install it with: {INSTALL_HINT}"
        ) from err


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str | dict[str, Any]],
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Run lm-eval `tasks` on the in-memory `model`; returns `{task: {metric: value}}`.

    Metric keys drop lm-eval's `,none` filter suffix (`acc,none` → `acc`). Named tasks need the
    builtin registry and, for most, the Hub; dict tasks over local files run offline.
    """
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if max_length is not None:
        kwargs["max_length"] = max_length
    lm = HFLM(pretrained=model, tokenizer=tokenizer, **kwargs)
    manager = TaskManager(include_defaults=any(isinstance(t, str) for t in tasks))
    # one seed for every generator lm-eval seeds: Python's, numpy's, torch's and few-shot sampling
    seeds = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")
    out = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=False,
        **dict.fromkeys(seeds, seed),
    )
    if out is None:  # simple_evaluate returns None on non-zero ranks only
        return {}
    return {task: _clean(values) for task, values in out["results"].items()}


def _clean(values: dict[str, Any]) -> dict[str, float]:
    cleaned: dict[str, float] = {}
    for key, value in values.items():
        if key == "sample_len":
            cleaned["n"] = float(value)
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            metric, _, filt = key.partition(",")
            cleaned[metric if filt in ("", "none") else f"{metric}[{filt}]"] = float(value)
    return cleaned
