"""A few real steps on the embedded SmolLM2-135M-Instruct (LoRA), through the models loader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from instructune.config import Config
from instructune.training.run import run_train

DATA = Path(__file__).resolve().parents[2] / "data" / "promises" / "test.jsonl"


@pytest.mark.slow
def test_lora_steps_on_embedded_model(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    cfg = Config.model_validate(
        {
            "data": {"train": [{"path": str(DATA), "max_rows": 24}], "max_length": 96},
            "method": "lora",
            "train": {"max_steps": 2, "micro_batch_size": 1, "logging_steps": 1},
            "output_dir": str(tmp_path / "run"),
        }
    )
    result = run_train(cfg)
    assert result.metrics["global_step"] == 2
    assert math.isfinite(result.metrics["final_loss"])
    # An instruct model already answers this format well: the loss starts low, not at ln(vocab).
    assert result.metrics["final_loss"] < 5.0
    assert result.metrics["trained_tokens_per_s"] > 0
    config = json.loads((result.out_dir / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
