"""What the Eval page shows of an eval run: its metrics.json tables per tuned model (the report's
own rows), and its predictions grouped per item with the items whose outcome flipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instructune.evaluation.report import summary_rows, tuned_names
from instructune.rundir import RunDir
from instructune.studio.runs import read_json

_cache: dict[tuple[Path, int, float], list[dict[str, Any]]] = {}


def summary(folder: Path) -> dict[str, Any]:
    metrics = read_json(RunDir(folder).eval_metrics_file)
    names = tuned_names(metrics)
    return {
        "meta": metrics.get("meta", {}),
        "tables": [(name, summary_rows(metrics, name)) for name in names],
        "regressions": metrics.get("regressions", {}),
        "models": ["base", *names] if "base" in metrics else names,
    }


def items(folder: Path) -> list[dict[str, Any]]:
    """One entry per (task, source): prompt, reference, each model's output and correctness,
    and `flipped` (models disagree on correctness, or on the output when nothing scores it).
    Eval sets are small enough to group in memory; the grouping is cached per file version."""
    path = RunDir(folder).predictions_file
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime)
    if key not in _cache:
        _cache.clear()
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from None
                _add(grouped, record)
        for item in grouped.values():
            correct = {o.get("correct") for o in item["outputs"].values()}
            texts = {o.get("output") for o in item["outputs"].values()}
            scored = None not in correct
            item["flipped"] = len(correct) > 1 if scored else len(texts) > 1
        _cache[key] = list(grouped.values())
    return _cache[key]


def _add(grouped: dict[tuple[str, str], dict[str, Any]], record: dict[str, Any]) -> None:
    task, source = str(record.get("task", "")), str(record.get("source", ""))
    item = grouped.setdefault(
        (task, source),
        {
            "task": task,
            "source": source,
            "prompt": str(record.get("prompt", "")),
            "reference": str(record.get("reference", "")),
            "outputs": {},
        },
    )
    correct = record.get("correct")
    item["outputs"][str(record.get("model", "?"))] = {
        "output": str(record.get("output", "")),
        "correct": None if correct is None else bool(correct),
    }
