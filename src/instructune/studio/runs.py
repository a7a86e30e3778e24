"""What the Runs page shows of a training output_dir: a table row (from config.yaml,
manifest.json, train_results.json and the metrics log), curves, the config diff between runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import yaml

from instructune.rundir import RunDir
from instructune.studio.jsonl import MetricsSeries

MAX_POINTS = 2000
"""Points per series sent to a chart: a 100k-step log arrives as 2000 bucket means."""
CURVES = {
    "loss": ("loss", "eval_loss"),
    "learning rate": ("learning_rate",),
    "grad norm": ("grad_norm",),
    "throughput (tokens/s)": ("tokens_per_s", "trained_tokens_per_s"),
}


class MetricsCache:
    """One incrementally parsed `MetricsSeries` per metrics.jsonl, shared by all requests."""

    def __init__(self) -> None:
        self._series: dict[Path, MetricsSeries] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> MetricsSeries:
        with self._lock:
            if path not in self._series:
                self._series[path] = MetricsSeries(path)
            return self._series[path]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, {} when it is missing or not an object (a run still starting)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_config(folder: Path) -> dict[str, Any]:
    """The resolved config.yaml as plain data (not validated: an old run still shows)."""
    try:
        data = yaml.safe_load(RunDir(folder).config_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_row(folder: Path, rel: str, metrics: MetricsCache) -> dict[str, Any]:
    """The Runs table's columns for one run."""
    run = RunDir(folder)
    cfg = read_config(folder)
    manifest = read_json(run.manifest_file)
    results = read_json(run.results_file)
    last: dict[str, float] = {}
    if run.metrics_file.is_file():
        last = metrics.get(run.metrics_file).last()
    train = cfg.get("train") or {}
    hashes = manifest.get("data_hashes") or {}
    return {
        "path": rel,
        "method": cfg.get("method", "-"),
        "objective": train.get("objective", "sft"),
        "model": (cfg.get("model") or {}).get("path", "-"),
        "data_hash": str(hashes.get("train", "-"))[:12],
        "steps": results.get("global_step", last.get("step")),
        "final_loss": results.get("final_loss", last.get("loss")),
        "eval_loss": results.get("eval_loss", last.get("eval_loss")),
        "wall_s": results.get("train_runtime_s", last.get("elapsed_s")),
        "tokens_per_s": results.get("tokens_per_s", last.get("tokens_per_s")),
        "finished": bool(results),
    }


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → {"train.learning_rate": "0.0002", ...} (lists as JSON)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(data, default=str)}


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(key, value per run) for every key whose value differs between the runs."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for key in keys:
        values = [f.get(key, "—") for f in flat]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows
