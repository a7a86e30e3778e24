"""`type: preference` eval tasks: a short DPO run raises held-out preference accuracy over its base,
shown by `run_eval` with the paired test, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.config import Config, DataConfig, DataSource
from instructune.data.preference import prepare_pairs
from instructune.evaluation.run import run_eval
from instructune.models.logprobs import sequence_logps
from instructune.training.dpo import PairCollator
from instructune.training.run import run_train

ANSWERS = ("Sure, here it is.", "I will not do that.")


def _rows(start: int, n: int, chosen: str, rejected: str) -> list[dict[str, str]]:
    return [
        {"prompt": f"Please list {i} colours.", "chosen": chosen, "rejected": rejected}
        for i in range(start, start + n)
    ]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _disfavoured_first(tiny_tok: Any, tiny_model_dir: Path, tmp_path: Path) -> tuple[str, str]:
    """The two answers ordered so that the base model prefers the second: DPO must flip it."""
    from transformers import AutoModelForCausalLM

    probe = _write(tmp_path / "probe.jsonl", _rows(0, 1, *ANSWERS))
    cfg = DataConfig(train=[DataSource(path=str(probe), format="preference")], max_length=64)
    pair = prepare_pairs(cfg, tiny_tok).train[0]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        chosen, rejected = sequence_logps(base, PairCollator(tiny_tok.pad_token_id)([pair]))
    return ANSWERS if chosen < rejected else ANSWERS[::-1]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dpo_raises_held_out_preference_accuracy(
    tiny_tok: Any, tiny_model_dir: Path, tmp_path: Path, precision: str
) -> None:
    good, bad = _disfavoured_first(tiny_tok, tiny_model_dir, tmp_path)
    train = _write(tmp_path / "train.jsonl", _rows(0, 16, good, bad))
    held_out = _write(tmp_path / "test.jsonl", _rows(100, 12, good, bad))
    run = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(train)}], "max_length": 64},
            # The base prefers the answer one token shorter by about log(vocab) = 6 nats. The
            # random model's LM head caps every logit near +-0.9 (rows of norm <= 0.16 after a
            # unit-RMS final norm), so adapters on attention alone moved each answer token's
            # log-prob by about half a nat: they closed that gap only just, and whether held-out
            # pairs crossed it depended on the CPU's rounding. LoRA on the head lifts the cap
            # (held-out margin ~+80 in fp32 and bf16 alike), and the held-out pairs share the
            # training answers, so the flip generalizes by construction.
            "lora": {
                "r": 4,
                "alpha": 8,
                "dropout": 0.0,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"],
            },
            "train": {
                "objective": "dpo",
                "precision": precision,
                "max_steps": 20,
                "micro_batch_size": 4,
                "learning_rate": 1e-2,
                "lr_scheduler": "constant",
                "logging_steps": 1,
            },
            "dpo": {"beta": 0.1},
            "output_dir": str(tmp_path / "dpo"),
        }
    )
    out = run_train(run).out_dir
    task = {"name": "pairs", "path": str(held_out), "format": "preference", "type": "preference"}
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "adapter": str(out),
            "eval": {"tasks": [task]},
            "output_dir": str(tmp_path / "eval"),
        }
    )
    metrics = run_eval(cfg).metrics
    base, tuned = metrics["base"]["pairs"], metrics["tuned"]["pairs"]
    assert base["accuracy"] == 0.0 and base["n"] == 12
    assert tuned["accuracy"] == 1.0
    assert tuned["margin"] > 0 > base["margin"]
    # a wide flip, not a rounding-sized one: the tuned preference outweighs the base's
    assert tuned["margin"] > 3 * -base["margin"]
    comparison = metrics["comparison"]["pairs"]["accuracy"]
    assert comparison["delta"] == pytest.approx(1.0)
    assert comparison["p_value"] < 0.01  # McNemar on 12 flipped items
    records = [
        json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    assert {r["model"] for r in records} == {"base", "tuned"} and all(
        "correct" in r for r in records
    )
