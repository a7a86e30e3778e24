"""Each method trains what it should and nothing else, through `run_train` (the real entry)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from instructune.training.run import run_train


class Snapshot(TrainerCallback):
    """Parameters (and their trainability) as the Trainer starts."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for name, param in kwargs["model"].named_parameters():
            self.before[name] = param.detach().clone()
            if param.requires_grad:
                self.trainable.add(name)


def _changed(snapshot: Snapshot, model: Any) -> set[str]:
    after = dict(model.named_parameters())
    return {n for n, t in snapshot.before.items() if not torch.equal(t, after[n].detach())}


CASES = [
    ("full", {}, lambda n: True),
    ("lora", {}, lambda n: "lora_" in n),
    ("lora", {"use_dora": True}, lambda n: "lora_" in n),
    ("lora", {"use_rslora": True, "target_modules": "all-linear"}, lambda n: "lora_" in n),
    ("qlora", {}, lambda n: "lora_" in n),
]


@pytest.mark.parametrize(("method", "lora", "should_train"), CASES)
def test_method_trains_exactly_its_parameters(
    make_config: Any, method: str, lora: dict[str, Any], should_train: Any
) -> None:
    cfg = make_config(method=method, lora=lora, train={"max_steps": 3})
    snapshot = Snapshot()
    result = run_train(cfg, callbacks=[snapshot])

    expected = {n for n in snapshot.before if should_train(n)}
    assert snapshot.trainable == expected
    assert expected, "nothing to train"
    # Every trainable tensor moved (LoRA B starts at zero, A moves once B is nonzero) and no
    # frozen one did; 4-bit bases are compared through their packed storage.
    assert _changed(snapshot, result.model) == expected

    out = result.out_dir
    if method == "full":
        assert (out / "model.safetensors").is_file()
        assert not (out / "adapter_model.safetensors").exists()
    else:
        assert (out / "adapter_model.safetensors").is_file()
        assert not list(out.glob("*.bin")), "adapters are saved as safetensors only"
    assert (out / "template.jinja").read_text() == result.prepared.template.source_text


def test_qlora_base_is_4bit(make_config: Any) -> None:
    result = run_train(make_config(method="qlora", train={"max_steps": 1}))
    assert result.metrics["global_step"] == 1
    kinds = {type(m).__name__ for m in result.model.modules()}
    assert "Linear4bit" in kinds
