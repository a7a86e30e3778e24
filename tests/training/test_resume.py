"""Resuming from a mid-run checkpoint ends where the uninterrupted run ends."""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from instructune.training.plots import read_metrics
from instructune.training.run import run_train


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_matches_uninterrupted_run(make_config: Any) -> None:
    # Dropout on and accumulation across an epoch boundary: the RNG state and the data position
    # must both be restored, not only the weights and the optimizer. The thread count is fixed
    # (`train.num_threads`), as the README says to for bit-identical reruns: the thread policy
    # would change it with the machine's load, and a different split of a reduction across
    # threads changes the last bits of the sums.
    train = {
        "max_steps": 6,
        "save_steps": 3,
        "gradient_accumulation_steps": 2,
        "micro_batch_size": 4,
        "num_threads": 2,
    }
    lora = {"dropout": 0.1}
    full = run_train(make_config(train=train, lora=lora, out="full"))
    assert full.metrics["epoch"] > 1

    cfg = make_config(train=train, lora=lora, out="split")
    first = run_train(cfg, callbacks=[StopAt(3)])
    assert first.metrics["global_step"] == 3
    resumed = run_train(cfg, resume=True)
    assert resumed.metrics["global_step"] == 6

    expected, got = _trainable(full.model), _trainable(resumed.model)
    assert expected.keys() == got.keys()
    for name in expected:  # bit-identical, not close
        assert torch.equal(got[name], expected[name]), name

    full_log = [r for r in read_metrics(full.out_dir / "metrics.jsonl") if "loss" in r]
    split_log = [r for r in read_metrics(cfg.output_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in split_log] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full_log, split_log, strict=True):
        assert b["loss"] == a["loss"]
        assert (b["tokens"], b["trained_tokens"]) == (a["tokens"], a["trained_tokens"])
    assert resumed.metrics["trained_tokens"] == full.metrics["trained_tokens"]
