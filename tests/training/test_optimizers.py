"""Every optimizer and scheduler name of the config constructs through the Trainer and steps."""

from __future__ import annotations

import itertools
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.config.schema import OptimizerName, SchedulerName
from instructune.training.args import OPTIMIZERS, SCHEDULERS, build_training_args
from instructune.training.trainer import InstructTrainer


def _trainer(cfg: Any, model: Any, tmp_path: Path) -> InstructTrainer:
    args = build_training_args(cfg, tmp_path, torch.float32, packed=True, has_eval=False)
    return InstructTrainer(model=model, args=args, pad_token_id=3)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(4, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": torch.arange(16).repeat(2, 1)}


def test_every_config_name_is_mapped() -> None:
    assert set(typing.get_args(OptimizerName)) == set(OPTIMIZERS)
    assert set(typing.get_args(SchedulerName)) == set(SCHEDULERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_constructs_and_steps(
    name: str, make_config: Any, tiny_model: Any, tmp_path: Path
) -> None:
    cfg = make_config(method="full", train={"optimizer": name, "learning_rate": 1e-2})
    trainer = _trainer(cfg, tiny_model, tmp_path)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    batch = _batch()
    _, n_items = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    trainer.training_step(tiny_model, batch, n_items)
    assert trainer.optimizer is not None
    trainer.optimizer.step()
    moved = [n for n, p in tiny_model.named_parameters() if not torch.equal(before[n], p)]
    # The layers all see gradients; embeddings of unseen tokens may legitimately stay put.
    assert any("layers.0.self_attn.q_proj" in n for n in moved), (name, moved)
    assert "lm_head.weight" in moved


def _lrs(cfg: Any, model: Any, tmp_path: Path, steps: int) -> list[float]:
    trainer = _trainer(cfg, model, tmp_path)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    assert optimizer is not None and scheduler is not None
    lrs: list[float] = []
    for _ in range(steps):
        lrs.append(float(scheduler.get_last_lr()[0]))
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_shape(name: str, make_config: Any, tiny_model: Any, tmp_path: Path) -> None:
    warm = {} if name == "constant" else {"warmup_steps": 2}
    train = {"lr_scheduler": name, "learning_rate": 1.0, "lr_cycles": 2} | warm
    lrs = _lrs(make_config(train=train), tiny_model, tmp_path, steps=12)
    if name == "constant":
        assert lrs == [1.0] * 12
        return
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])  # linear warmup over 2 steps
    after = lrs[2:]
    if name == "constant_with_warmup":
        assert after == [1.0] * 10
    elif name == "cosine_with_restarts":
        assert any(b > a + 0.3 for a, b in itertools.pairwise(after)), after
    else:  # cosine, linear: monotone decay towards 0
        assert all(b <= a for a, b in itertools.pairwise(after))
        assert after[-1] <= 0.1 < after[1]


def test_warmup_ratio_maps_to_a_fraction(make_config: Any, tiny_model: Any, tmp_path: Path) -> None:
    cfg = make_config(train={"lr_scheduler": "linear", "learning_rate": 1.0, "warmup_ratio": 0.25})
    lrs = _lrs(cfg, tiny_model, tmp_path, steps=8)
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0])  # 25 % of 8 steps = 2 warmup steps
