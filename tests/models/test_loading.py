"""Tokenizer and model loading: pad handling, dtype choice, training/inference setup, manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import instructune.models.loading as loading
from instructune.config.schema import ModelConfig
from instructune.models.loading import describe_model, load_model, load_tokenizer, resolve_dtype


@pytest.fixture
def tiny_dir(tmp_path: Path, tiny_tok: Any, tiny_model: Any) -> Path:
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    return folder


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "best_device", lambda: "cpu")
    monkeypatch.setattr(loading, "bf16_supported", lambda: False)


@pytest.mark.parametrize(
    ("precision", "model_dtype", "expected"),
    [
        ("fp32", "auto", torch.float32),
        ("bf16", "auto", torch.bfloat16),
        ("auto", "auto", torch.float32),
        ("bf16", "float32", torch.float32),  # model.dtype wins over train.precision
        ("fp32", "bfloat16", torch.bfloat16),
    ],
)
def test_resolve_dtype_on_cpu_without_bf16(
    cpu_without_bf16: None, precision: str, model_dtype: str, expected: torch.dtype
) -> None:
    assert resolve_dtype(precision, model_dtype) == expected


def test_auto_picks_bf16_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "best_device", lambda: "cpu")
    monkeypatch.setattr(loading, "bf16_supported", lambda: True)
    assert resolve_dtype("auto", "auto") == torch.bfloat16
    # Outside training, auto stays float32 on CPU.
    assert resolve_dtype("auto", "auto", for_training=False) == torch.float32


@pytest.mark.parametrize(("precision", "model_dtype"), [("fp16", "auto"), ("auto", "float16")])
def test_fp16_on_cpu_is_an_error(cpu_without_bf16: None, precision: str, model_dtype: str) -> None:
    with pytest.raises(ValueError, match="bf16 or fp32"):
        resolve_dtype(precision, model_dtype)


def test_bf16_detection_matches_cpu_flags() -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    flags = loading._cpu_flags()
    assert loading.bf16_supported() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_model_for_training(tiny_dir: Path, dtype: torch.dtype) -> None:
    model = load_model(ModelConfig(path=str(tiny_dir)), dtype, "lora", for_training=True)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model.config.use_cache is False
    assert model.config._attn_implementation == "sdpa"
    assert model.training
    info = describe_model(model)
    assert info["dtype"] == str(dtype).removeprefix("torch.")
    assert info["device"] == "cpu" and info["quantization"] is None
    assert info["params_total"] == info["params_trainable"] == model.num_parameters()


def test_load_model_for_inference(tiny_dir: Path) -> None:
    cfg = ModelConfig(path=str(tiny_dir), attn_implementation="eager")
    model = load_model(cfg, torch.float32, "full", for_training=False)
    assert not model.training and model.config._attn_implementation == "eager"


def test_tokenizer_keeps_its_pad(tiny_dir: Path) -> None:
    tok = load_tokenizer(ModelConfig(path=str(tiny_dir)))
    assert tok.is_fast and tok.pad_token == "<pad>" and tok.eos_token == "<|im_end|>"


def test_tokenizer_without_pad_gets_eos(tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    config_file = tiny_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("pad_token", None)
    config_file.write_text(json.dumps(config))
    with caplog.at_level("INFO", logger=loading.__name__):
        tok = load_tokenizer(ModelConfig(path=str(tiny_dir)))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert "no pad token" in caplog.text


@pytest.mark.slow
def test_gguf_path_loads_dense_and_matches_the_converted_folder() -> None:
    from instructune.models.embedded import embedded_gguf_path, ensure_embedded_model

    from .helpers import logit_parity

    gguf_cfg = ModelConfig(path=str(embedded_gguf_path()))
    from_gguf = load_model(gguf_cfg, torch.float32, "lora", for_training=False)
    assert getattr(from_gguf, "hf_quantizer", None) is None
    assert "quantization_config" not in from_gguf.config.to_dict()
    assert type(from_gguf.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    folder_cfg = ModelConfig(path=str(ensure_embedded_model()))
    from_folder = load_model(folder_cfg, torch.float32, "lora", for_training=False)
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    assert logit_parity(from_gguf, from_folder, ids) == 0.0  # float32 storage is lossless
    tok = load_tokenizer(gguf_cfg)
    assert tok.pad_token == "<|im_end|>" and tok.chat_template
