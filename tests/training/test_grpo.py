"""Experimental `train.objective: grpo` (TRL's GRPOTrainer) against a reward model trained by
`run_train`: a tiny run through `run_train` writes a run folder (manifest, metrics.jsonl,
results, adapter) that `load_bundle` loads and the engine uses; it gets the lifecycle every
objective gets (thread policy, Ctrl-C checkpoint); bad configs are refused."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from transformers import TrainerCallback

from instructune.bundle import load_bundle
from instructune.config import Config, dump_config
from instructune.inference.engine import Engine, SamplingParams
from instructune.training.grpo import RewardModelScorer
from instructune.training.interrupt import TrainingInterrupted
from instructune.training.run import run_train


def _setup(tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    rows = [
        {"prompt": f"Please list {i} colours.", "chosen": "Red, blue.", "rejected": "Go away."}
        for i in range(8)
    ]
    rows.append(rows[0])  # a repeated prompt is sampled once, and counted
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": [{"path": str(data)}], "max_length": 64, "dedup": False},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    }


def _grpo(base: dict[str, Any], out: Path, steps: int = 2, **grpo: Any) -> Config:
    return Config.model_validate(
        base
        | {
            "train": {
                "objective": "grpo",
                "max_steps": steps,
                "micro_batch_size": 4,
                "learning_rate": 1e-3,
                "logging_steps": 1,
            },
            "grpo": {"num_generations": 4, "max_completion_length": 6} | grpo,
            "output_dir": str(out),
        }
    )


def _reward_run(base: dict[str, Any], out: Path, steps: int) -> Path:
    """A `train.objective: reward` run on the same data: the reward model GRPO scores with."""
    train = {"objective": "reward", "max_steps": steps, "micro_batch_size": 4}
    return run_train(Config.model_validate(base | {"train": train, "output_dir": str(out)})).out_dir


def test_grpo_through_run_train(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = _setup(tiny_model_dir, tmp_path)
    reward_run = _reward_run(base, tmp_path / "rm", steps=4)
    scorer = RewardModelScorer(reward_run)
    prompt = [{"role": "user", "content": "Please list 3 colours."}]
    good, bad = scorer([prompt, prompt], ["Red, blue.", "Go away."])
    assert good is not None and bad is not None and good > bad

    result = run_train(_grpo(base, tmp_path / "grpo", reward_model=str(reward_run), beta=0.1))
    out = result.out_dir
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all("reward" in r and "loss" in r and "kl" in r for r in records)
    assert records[-1]["tokens"] > records[0]["tokens"] > 0
    assert result.metrics["global_step"] == 2
    assert result.metrics["reward_last"] == records[-1]["reward"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train_prompts"] == 8
    assert manifest["dropped"] == {"duplicate_prompt": 1}
    assert manifest["results"] == result.metrics
    assert json.loads((out / "train_results.json").read_text()) == result.metrics
    assert (out / "training_curves.png").is_file()
    # the lifecycle every objective runs: the thread policy governed it, compile was decided
    assert "thread_changes" in result.metrics and result.metrics["torch_threads"] >= 1
    assert result.metrics["compiled_layers"] == 0  # `auto` leaves tiny models eager
    bundle = load_bundle(out)
    assert bundle.adapters
    text = Engine.from_bundle(bundle).chat([prompt], SamplingParams(max_new_tokens=4))[0]
    assert text.completion_tokens > 0


class CtrlCAt(TrainerCallback):
    """Sends this process SIGINT at the end of optimizer step `step`, as a user's Ctrl-C."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_grpo_ctrl_c_saves_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = _setup(tiny_model_dir, tmp_path)
    reward_run = str(_reward_run(base, tmp_path / "rm", steps=1))
    cfg = _grpo(base, tmp_path / "grpo", steps=5, reward_model=reward_run, beta=0.1)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(
        TrainingInterrupted, match=r"interrupted at step 1; saved a checkpoint"
    ) as caught:
        run_train(cfg, callbacks=[CtrlCAt(1)])
    assert signal.getsignal(signal.SIGINT) is handler
    checkpoint = tmp_path / "grpo" / "checkpoints" / "checkpoint-1"
    assert caught.value.checkpoint == checkpoint
    assert "--resume" not in str(caught.value)  # grpo can't resume: the message must not offer it
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert (checkpoint / "trainer_state.json").is_file()
    assert not (checkpoint.parent / ".incomplete").exists()  # saved atomically, like ours


def test_grpo_refuses_a_run_that_is_not_a_reward_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = _setup(tiny_model_dir, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"grpo\.reward_model: no run folder"):
        run_train(_grpo(base, tmp_path / "a", reward_model=str(tmp_path / "missing")))
    sft = Config.model_validate(
        base | {"train": {"max_steps": 1}, "output_dir": str(tmp_path / "sft")}
    )
    run_train(sft)
    with pytest.raises(ValueError, match=r"is a train\.objective: sft run"):
        run_train(_grpo(base, tmp_path / "b", reward_model=str(tmp_path / "sft")))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grpo": {"num_generations": 4}}, "needs grpo.reward_model"),
        ({"method": "prompt_tuning"}, "works with method lora, qlora, ia3 or full"),
        ({"method": "full", "grpo": {"reward_model": "rm", "beta": 0.1}}, "second copy"),
        ({"data.template": "alpaca"}, "needs data.template: chat"),
        ({"data.eval_fraction": 0.1}, "does not evaluate during training"),
        ({"grpo": {"reward_model": "rm", "num_generations": 3}}, "multiple of grpo.num_gen"),
        ({"grpo": {"reward_model": "rm", "max_completion_length": 128}}, "must be below"),
        ({"train.save_steps": 5}, "can't resume"),
    ],
)
def test_grpo_config_refusals(change: dict[str, Any], message: str) -> None:
    cfg: dict[str, Any] = {
        "data": {"train": [{"path": "p.jsonl"}], "max_length": 128, "packing": False},
        "train": {"objective": "grpo", "micro_batch_size": 4},
        "grpo": {"reward_model": "rm"},
    }
    for key, value in change.items():
        section, _, name = key.partition(".")
        if name:
            cfg[section] = cfg[section] | {name: value}
        else:
            cfg[section] = value
    with pytest.raises(ValidationError, match=message):
        Config.model_validate(cfg)


def test_cli_train_grpo_names_a_missing_reward_run(
    tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    from instructune.cli.main import main

    base = _setup(tiny_model_dir, tmp_path)
    cfg = _grpo(base, tmp_path / "run", reward_model=str(tmp_path / "no-rm"))
    path = tmp_path / "grpo.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert main(["train", str(path)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"grpo.reward_model: no run folder '{tmp_path}/no-rm'" in errors[0]
