"""Methods on the tiny Llama: LoRA variants, QLoRA on CPU, adapter save/reload, merge parity."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.bundle import load_adapter
from instructune.config.methods import LoraConfig, QuantizationConfig
from instructune.config.schema import ModelConfig
from instructune.models.loading import load_model
from instructune.models.peft_setup import (
    apply_method,
    linear_module_names,
    merge_adapter,
    save_adapter,
)

from ..tiny import tiny_llama
from .helpers import logit_parity


def _trainable(model: Any) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _ids(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(seed))


def _perturb_lora(model: Any) -> None:
    """LoRA B starts at zero, which would make every parity check trivially pass."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def test_full_trains_everything(tiny_model: Any) -> None:
    tiny_model.requires_grad_(False)
    model = apply_method(tiny_model, "full", LoraConfig(), gradient_checkpointing=False)
    assert all(p.requires_grad for p in model.parameters())


def test_lora_defaults_train_only_attention_adapters(tiny_model: Any) -> None:
    model = apply_method(tiny_model, "lora", LoraConfig(r=4), gradient_checkpointing=False)
    names = _trainable(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(names) == 2 * 4 * 2  # A and B, four projections, two layers


def test_all_linear_skips_lm_head_and_layers_to_transform(tiny_model: Any) -> None:
    lora = LoraConfig(r=2, target_modules="all-linear", layers_to_transform=[1])
    model = apply_method(tiny_model, "lora", lora, gradient_checkpointing=False)
    names = _trainable(model)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(".layers.1." in n for n in names) and not any("lm_head" in n for n in names)


def test_dora_and_rslora(tiny_model: Any) -> None:
    lora = LoraConfig(r=4, alpha=8, use_dora=True, use_rslora=True)
    model = apply_method(tiny_model, "lora", lora, gradient_checkpointing=False)
    assert any("lora_magnitude_vector" in n for n in _trainable(model))
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(8 / math.sqrt(4))


def test_unknown_target_lists_linear_modules(tiny_model: Any) -> None:
    lora = LoraConfig(target_modules=["q_proj", "c_attn"])
    with pytest.raises(ValueError, match=r"\['c_attn'\]") as err:
        apply_method(tiny_model, "lora", lora, gradient_checkpointing=False)
    assert "gate_proj" in str(err.value) and "all-linear" in str(err.value)
    assert "lm_head" in linear_module_names(tiny_model)


def test_gradient_checkpointing_still_reaches_adapters(tiny_model: Any, tiny_tok: Any) -> None:
    model = apply_method(tiny_model, "lora", LoraConfig(r=2), gradient_checkpointing=True)
    model.train()
    assert model.base_model.model.is_activation_checkpointing
    ids = _ids(len(tiny_tok))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" not in n)
    assert all(g is not None for g in grads.values())


def test_qlora_nf4_on_cpu(tmp_path: Path, tiny_model: Any, tiny_tok: Any) -> None:
    tiny_model.save_pretrained(tmp_path)
    quant = QuantizationConfig(compute_dtype="float32")
    model = load_model(ModelConfig(path=str(tmp_path)), torch.float32, "qlora", quant)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = apply_method(model, "qlora", LoraConfig(r=2), gradient_checkpointing=True)
    ids = _ids(len(tiny_tok))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad and all("lora_" in n for n in with_grad)
    assert set(with_grad) == set(_trainable(model))


def test_qlora_needs_a_4bit_model(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="4-bit"):
        apply_method(tiny_model, "qlora", LoraConfig(), gradient_checkpointing=False)


def test_adapter_saves_only_lora_and_reloads_identically(
    tmp_path: Path, tiny_model: Any, tiny_tok: Any
) -> None:
    from safetensors import safe_open

    model = apply_method(tiny_model, "lora", LoraConfig(r=4), gradient_checkpointing=False)
    _perturb_lora(model)
    template = "{{ messages }}\r\n— ünïcode, trailing space "
    out = save_adapter(model, tiny_tok, template, tmp_path / "adapter")
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert (out / "template.jinja").read_bytes() == template.encode("utf-8")
    assert (out / "tokenizer.json").is_file()

    reloaded = load_adapter(tiny_llama(len(tiny_tok)), out)
    assert logit_parity(model, reloaded, _ids(len(tiny_tok))) == 0.0


def test_merge_parity(tiny_model: Any, tiny_tok: Any) -> None:
    model = apply_method(tiny_model, "lora", LoraConfig(r=4), gradient_checkpointing=False)
    _perturb_lora(model)
    ids = _ids(len(tiny_tok))
    base = tiny_llama(len(tiny_tok))
    assert logit_parity(model, base, ids) > 1e-3  # the adapter does change the output
    unmerged = model.eval()(input_ids=ids).logits.detach().clone()
    merged = merge_adapter(model)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    diff = (merged(input_ids=ids).logits - unmerged).abs().max().item()
    assert diff < 1e-4


def test_load_adapter_needs_a_config(tmp_path: Path, tiny_model: Any) -> None:
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_adapter(tiny_model, tmp_path)
