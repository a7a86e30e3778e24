"""`train.compile`: the compiled decoder layers train to the same losses as eager ones."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from instructune.training.compile import AUTO_MIN_PARAMS, wants_compile
from instructune.training.plots import read_metrics
from instructune.training.run import run_train


def test_compiled_layers_train_like_eager(make_config: Any, tmp_path: Any) -> None:
    losses = {}
    for setting in (False, True):
        cfg = make_config(
            train={"max_steps": 3, "logging_steps": 1, "compile": setting},
            data={"packing": True},
            output_dir=str(tmp_path / f"compile-{setting}"),
        )
        result = run_train(cfg)
        assert result.metrics["compiled_layers"] == (2 if setting else 0)
        losses[setting] = [r["loss"] for r in read_metrics(result.out_dir / "metrics.jsonl")]
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_auto_compiles_real_models_only() -> None:
    small = torch.nn.Linear(10, 10)
    assert not wants_compile("auto", small, "lora")
    assert wants_compile(True, small, "lora") and not wants_compile(False, small, "full")

    class Big(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(AUTO_MIN_PARAMS, device="meta"))

    assert wants_compile("auto", Big(), "lora")
    assert not wants_compile("auto", Big(), "qlora")  # 4-bit weights stay eager
