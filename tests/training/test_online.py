"""Experimental GRPO (TRL's GRPOTrainer) against a reward model trained by `run_train`: a tiny
run on the tiny model writes a LoRA run folder that `load_bundle` loads and the engine uses."""

from __future__ import annotations

import json
from pathlib import Path

from instructune.artifacts import load_bundle
from instructune.config import Config
from instructune.inference.engine import Engine, SamplingParams
from instructune.training.online import GRPOSettings, RewardModelScorer, run_grpo
from instructune.training.run import run_train


def test_grpo_against_a_trained_reward_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": f"Please list {i} colours.", "chosen": "Red, blue.", "rejected": "Go away."}
        for i in range(8)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    base = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": [{"path": str(data)}], "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    }
    reward_cfg = Config.model_validate(
        base
        | {
            "train": {"objective": "reward", "max_steps": 4, "micro_batch_size": 4},
            "output_dir": str(tmp_path / "rm"),
        }
    )
    reward_run = run_train(reward_cfg).out_dir
    scorer = RewardModelScorer(reward_run)
    prompt = [{"role": "user", "content": "Please list 3 colours."}]
    good, bad = scorer([prompt, prompt], ["Red, blue.", "Go away."])
    assert good > bad

    policy_cfg = Config.model_validate(
        base
        | {
            "train": {
                "max_steps": 2,
                "micro_batch_size": 4,
                "learning_rate": 1e-3,
                "logging_steps": 1,
            },
            "output_dir": str(tmp_path / "grpo"),
        }
    )
    out = run_grpo(policy_cfg, reward_run, GRPOSettings(num_generations=4, max_completion_length=6))
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["grpo"]["log"]) == 2
    assert all("reward" in r for r in manifest["grpo"]["log"])
    bundle = load_bundle(out)
    assert bundle.adapters
    text = Engine.from_bundle(bundle).chat([prompt], SamplingParams(max_new_tokens=4))[0]
    assert text.completion_tokens > 0
