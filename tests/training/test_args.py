"""TrainConfig → TrainingArguments: each knob lands where the Trainer reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.config import ConfigError
from instructune.training.args import build_training_args


def _args(cfg: Any, tmp_path: Path, **kw: Any) -> Any:
    options = {"packed": True, "has_eval": False} | kw
    return build_training_args(cfg, tmp_path / "checkpoints", torch.float32, **options)


def test_knobs_are_mapped(make_config: Any, tmp_path: Path) -> None:
    train = {
        "optimizer": "lion",
        "learning_rate": 3e-4,
        "weight_decay": 0.1,
        "adam_beta2": 0.99,
        "lr_scheduler": "cosine_with_restarts",
        "lr_cycles": 3,
        "warmup_steps": 5,
        "max_steps": 40,
        "micro_batch_size": 3,
        "gradient_accumulation_steps": 4,
        "max_grad_norm": None,
        "label_smoothing": 0.1,
        "neftune_noise_alpha": 5.0,
        "auto_find_batch_size": True,
        "seed": 7,
        "logging_steps": 2,
        "eval_steps": 10,
        "save_steps": 20,
        "save_total_limit": 3,
    }
    args = _args(make_config(train=train), tmp_path, has_eval=True)
    assert args.optim == "lion_32bit"
    assert (args.learning_rate, args.weight_decay, args.adam_beta2) == (3e-4, 0.1, 0.99)
    assert args.lr_scheduler_type == "cosine_with_restarts"
    assert args.lr_scheduler_kwargs == {"num_cycles": 3}
    assert args.warmup_steps == 5
    assert (args.max_steps, args.per_device_train_batch_size) == (40, 3)
    assert args.gradient_accumulation_steps == 4
    assert args.max_grad_norm == 0.0  # None disables clipping
    assert args.label_smoothing_factor == 0.0  # smoothing lives in our loss, not LabelSmoother
    assert args.neftune_noise_alpha == 5.0
    assert args.auto_find_batch_size
    assert (args.seed, args.data_seed) == (7, 7)
    assert (args.logging_steps, args.eval_steps, args.save_steps) == (2, 10, 20)
    assert (args.eval_strategy, args.save_strategy) == ("steps", "steps")
    assert args.save_total_limit == 3
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert not args.bf16 and not args.fp16  # CPU: the weights' dtype is the compute dtype
    assert args.report_to == []


def test_defaults_without_eval_or_save(make_config: Any, tmp_path: Path) -> None:
    args = _args(make_config(train={"eval_steps": 5}), tmp_path, has_eval=False)
    assert (args.eval_strategy, args.save_strategy) == ("no", "no")
    assert args.train_sampling_strategy == "random"


def test_group_by_length_only_for_padded_rows(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(train={"group_by_length": True})
    assert _args(cfg, tmp_path, packed=False).train_sampling_strategy == "group_by_length"
    assert _args(cfg, tmp_path, packed=True).train_sampling_strategy == "random"


def test_fp16_is_rejected_on_cpu_and_for_full(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(method="full")
    with pytest.raises(ConfigError, match="float16"):
        build_training_args(cfg, tmp_path, torch.float16, packed=True, has_eval=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            build_training_args(make_config(), tmp_path, torch.float16, packed=True, has_eval=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback only happens without a GPU")
def test_fsdp_without_gpu_warns_that_it_is_ddp(
    make_config: Any, tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level("WARNING"):
        _args(make_config(), tmp_path)
    assert "FSDP was requested but there is no GPU" in caplog.text
