"""`run_train` and `instructune train`: what the output folder holds, metrics, knobs, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers import TrainerCallback

from instructune.cli.main import main as cli_main
from instructune.config import ConfigError
from instructune.training.callbacks import TRAIN_KEYS
from instructune.training.plots import read_metrics
from instructune.training.run import run_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_output_dir_metrics_and_plot(make_config: Any) -> None:
    cfg = make_config(
        train={"max_steps": 4, "eval_steps": 2, "save_steps": 2, "save_total_limit": 1},
        data={"eval_fraction": 0.2},
    )
    result = run_train(cfg)
    out = result.out_dir
    for name in (
        "config.yaml",
        "manifest.json",
        "metrics.jsonl",
        "training_curves.png",
        "train_results.json",
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "template.jinja",
    ):
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-4"]  # limit 1

    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for record in train:
        assert set(TRAIN_KEYS) <= set(record)
        assert record["tokens"] >= record["trained_tokens"] > 0
        assert record["tokens_per_s"] > record["trained_tokens_per_s"] > 0
    assert train[-1]["trained_tokens"] == result.metrics["trained_tokens"]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]  # the final eval is not repeated
    assert result.metrics["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "train"
    assert manifest["results"]["global_step"] == 4
    assert manifest["model"]["params_trainable"] > 0


def test_trained_token_count_matches_the_data(make_config: Any) -> None:
    """One epoch sees every trained target exactly once (packed rows, labels[1:] counted)."""
    cfg = make_config(train={"max_steps": None, "epochs": 1, "micro_batch_size": 4})
    result = run_train(cfg)
    expected = sum(int((e.labels[1:] != -100).sum()) for e in result.prepared.train)
    assert result.metrics["trained_tokens"] == expected
    assert result.metrics["tokens"] == sum(len(e.input_ids) for e in result.prepared.train)


def test_cli_train(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(train={"max_steps": 2})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    assert cli_main(["train", str(path), "train.max_steps=1"]) == 0
    results = json.loads((cfg.output_path / "train_results.json").read_text())
    assert results["global_step"] == 1  # the dotted override reached the run


def test_resume_needs_a_checkpoint_and_fresh_runs_refuse_old_ones(make_config: Any) -> None:
    cfg = make_config(train={"max_steps": 2, "save_steps": 2})
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        run_train(cfg, resume=True)
    run_train(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        run_train(cfg)


class _Probe(TrainerCallback):
    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch

        model = kwargs["model"]
        emb = model.get_input_embeddings()
        ids = torch.tensor([[5, 6, 7]])
        self.seen["noisy"] = not torch.equal(emb(ids), emb(ids))
        self.seen["samplers"] = _samplers(kwargs["train_dataloader"])


def _samplers(loader: Any) -> set[str]:
    """Class names of the sampler chain under a (possibly accelerate-wrapped) DataLoader."""
    names: set[str] = set()
    todo = [loader]
    while todo:
        obj = todo.pop()
        for attr in ("batch_sampler", "sampler"):
            inner = getattr(obj, attr, None)
            if inner is not None and type(inner).__name__ not in names:
                names.add(type(inner).__name__)
                todo.append(inner)
    return names


def test_neftune_with_peft_adds_noise_in_training(make_config: Any) -> None:
    probe = _Probe()
    run_train(make_config(train={"max_steps": 1, "neftune_noise_alpha": 5.0}), callbacks=[probe])
    assert probe.seen["noisy"]
    probe = _Probe()
    run_train(make_config(train={"max_steps": 1}, out="plain"), callbacks=[probe])
    assert not probe.seen["noisy"]


def test_padded_path_with_group_by_length(make_config: Any) -> None:
    probe = _Probe()
    cfg = make_config(data={"packing": False}, train={"max_steps": 2, "group_by_length": True})
    result = run_train(cfg, callbacks=[probe])
    assert "LengthGroupedSampler" in probe.seen["samplers"]
    assert result.metrics["global_step"] == 2


def test_auto_find_batch_size_and_tensorboard(make_config: Any) -> None:
    cfg = make_config(
        train={"max_steps": 2, "auto_find_batch_size": True, "report_to": ["tensorboard"]}
    )
    result = run_train(cfg)
    assert result.metrics["global_step"] == 2
    assert list((result.out_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_unavailable_report_target_is_a_config_error(make_config: Any, monkeypatch: Any) -> None:
    # wandb is a test extra, not a dependency: without it, train.report_to names the fix
    monkeypatch.setitem(sys.modules, "wandb", None)  # what find_spec sees for a missing package
    with pytest.raises(ConfigError, match="pip install wandb"):
        run_train(make_config(train={"report_to": ["wandb"]}))
