"""Small data the curation tests write, and a one-call build."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from instructune.config import Config
from instructune.curation.build import BuildResult, run_build

ANIMALS = ["cat", "dog", "owl", "fox", "elk", "yak", "emu", "ant", "bee", "cod"]
COLOURS = ["red", "blue", "green", "grey", "pink", "gold", "teal", "plum", "jade", "navy"]


def sentences(n: int) -> list[dict[str, str]]:
    """n distinct labelled sentences: each holds a unique token `row<i>` for leak checks."""
    rows = []
    for i in range(n):
        animal, colour = ANIMALS[i % 10], COLOURS[(i // 10) % 10]
        label = "pos" if i % 2 == 0 else "neg"
        text = f"row{i} the {colour} {animal} number {i} was seen near the river on day {i * 7}"
        rows.append({"text": text, "label": label})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TEMPLATES = [
    {
        "id": "t0",
        "prompt": "Is this good or bad?\n{{ text }}\n{{ options_ }}",
        "target": "{{ answer }}",
    },
    {"id": "t1", "prompt": "{{ text }}\n\nSentiment?\n{{ options_ }}", "target": "{{ answer }}"},
    {"id": "inv", "prompt": "Write a {{ answer }} sentence.", "target": "{{ text }}"},
]


def table_source(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "toy",
        "path": str(path),
        "templates": TEMPLATES,
        "label": "label",
        "options": {"pos": "positive", "neg": "negative"},
        **extra,
    }


def build(
    tmp_path: Path, sources: list[dict[str, Any]], out: str = "out", **opts: Any
) -> BuildResult:
    cfg = Config.model_validate(
        {"build": {"sources": sources, **opts}, "output_dir": str(tmp_path / out)}
    )
    return run_build(cfg)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
