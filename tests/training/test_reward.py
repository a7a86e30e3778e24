"""Reward models (`train.objective: reward`): a one-output head on the base, Bradley-Terry loss on
preference pairs, trained through `run_train` (LoRA and full) and scored by `eval`'s preference
tasks on held-out pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from instructune.config import Config
from instructune.evaluation.run import run_eval
from instructune.models.rewards import sequence_rewards
from instructune.training.preference_trainer import bradley_terry_losses
from instructune.training.run import run_train

from .test_methods import Snapshot, _changed


def _rows(start: int, n: int) -> list[dict[str, str]]:
    return [
        {"prompt": f"Please list {i} colours.", "chosen": "Red, blue.", "rejected": "Go away."}
        for i in range(start, start + n)
    ]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(model_dir: Path, tmp_path: Path, method: str) -> Config:
    data = _write(tmp_path / "train.jsonl", _rows(0, 16))
    return Config.model_validate(
        {
            "model": {"path": str(model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 64},
            "method": method,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "objective": "reward",
                "max_steps": 8,
                "micro_batch_size": 4,
                "learning_rate": 2e-2,
                "lr_scheduler": "constant",
                "logging_steps": 1,
            },
            "output_dir": str(tmp_path / f"rm-{method}"),
        }
    )


def test_bradley_terry_loss() -> None:
    rewards = torch.tensor([2.0, 0.0, 1.0, 0.5])  # chosen (2, 0), rejected (1, 0.5)
    expected = -torch.nn.functional.logsigmoid(torch.tensor([1.0, -0.5]))
    torch.testing.assert_close(bradley_terry_losses(rewards), expected)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_reward_model_trains_and_ranks_held_out_pairs(
    tiny_model_dir: Path, tmp_path: Path, method: str
) -> None:
    snapshot = Snapshot()
    result = run_train(_config(tiny_model_dir, tmp_path, method), callbacks=[snapshot])
    changed = _changed(snapshot, result.model)
    assert any(".score." in n or n.endswith("score.weight") for n in changed), "head untrained"
    if method == "lora":
        assert changed == snapshot.trainable
        assert all("lora_" in n or "score" in n for n in changed)
    records = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert steps[-1]["rewards/accuracies"] == 1.0 and steps[-1]["rewards/margins"] > 0

    held_out = _write(tmp_path / "test.jsonl", _rows(100, 8))
    task = {"name": "pairs", "path": str(held_out), "format": "preference", "type": "preference"}
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "adapter": str(result.out_dir),
            "eval": {"tasks": [task], "compare_base": False},
            "output_dir": str(tmp_path / "eval"),
        }
    )
    tuned = run_eval(cfg).metrics["tuned"]["pairs"]
    assert tuned["accuracy"] == 1.0 and tuned["n"] == 8 and tuned["margin"] > 0


def test_reward_is_read_at_the_answers_end_of_turn(tiny_model_dir: Path) -> None:
    """Padding after a row does not change its reward (the head reads the trained end)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    ids = torch.tensor([[5, 6, 7, 8, 9, 3, 3, 3]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, -100, -100, -100]])
    with torch.no_grad():
        padded = sequence_rewards(
            model, {"input_ids": ids, "labels": labels, "attention_mask": (ids != 3).long()}
        )
        short = sequence_rewards(model, {"input_ids": ids[:, :5], "labels": labels[:, :5]})
    torch.testing.assert_close(padded, short)
