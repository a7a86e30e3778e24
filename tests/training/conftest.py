"""Training fixtures: small Alpaca files and configs pointing `model.path` at the tiny model
folder (`tiny_model_dir` in tests/conftest.py), so runs go through the real loader."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instructune.config import Config


def alpaca_rows(n: int) -> list[dict[str, str]]:
    """Rows whose responses differ in length, so micro-batches hold uneven trained-token counts."""
    return [
        {
            "instruction": f"What is {i} plus {i}?",
            "input": "" if i % 3 else "Answer in words.",
            "output": f"The answer is {2 * i}. " * (1 + i % 5),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(48)), encoding="utf-8")
    return path


ConfigFactory = Callable[..., Config]


@pytest.fixture
def make_config(tiny_model_dir: Path, train_file: Path, tmp_path: Path) -> ConfigFactory:
    """`make_config(method=..., train={...}, data={...}, lora={...}, out="name")` → Config."""

    def build(
        method: str = "lora",
        train: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        lora: dict[str, Any] | None = None,
        out: str = "run",
        **extra: Any,
    ) -> Config:
        raw: dict[str, Any] = {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(train_file)}], "max_length": 96} | (data or {}),
            "method": method,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0} | (lora or {}),
            "train": {
                "max_steps": 3,
                "micro_batch_size": 2,
                "learning_rate": 1e-2,
                "logging_steps": 1,
                "lr_scheduler": "constant",
            }
            | (train or {}),
            "output_dir": str(tmp_path / out),
        }
        return Config.model_validate(raw | extra)

    return build
