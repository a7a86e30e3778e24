"""The embedded SmolLM2-135M: a LoRA adapter merged with parity, then exported to GGUF and held
against llama.cpp's own GGUF of the same model (the file the package ships)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def test_embedded_merge_and_export_match_llama_cpp(tmp_path: Path) -> None:
    from gguf import GGUFReader, dequantize
    from peft import LoraConfig, get_peft_model

    from instructune.bundle import load_base
    from instructune.config import Config, dump_config
    from instructune.data.templates import load_template
    from instructune.models import load_tokenizer, save_adapter
    from instructune.models.embedded import embedded_gguf_path
    from instructune.ship.export import run_export
    from instructune.ship.merge import run_merge

    cfg = Config()  # model.path: the embedded smollm2-135m-instruct
    tok = load_tokenizer(cfg.model)
    peft = get_peft_model(load_base(cfg.model), LoraConfig(r=4, target_modules=["v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    run = tmp_path / "run"
    save_adapter(peft, tok, load_template("chat", tok).source_text, run)
    (run / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    del peft

    merged = run_merge(run, tmp_path / "merged")
    assert merged.parity.passed and merged.parity.max_abs_diff < 1e-3

    exported = run_export(tmp_path / "merged", tmp_path / "m.gguf", dtype="f32")
    assert exported.parity.max_abs_diff < 1e-4 and exported.parity.argmax_agreement == 1.0
    assert exported.report["tokenizer_roundtrip"]["mismatches"] == []

    ours, theirs = GGUFReader(str(tmp_path / "m.gguf")), GGUFReader(str(embedded_gguf_path()))
    mine = {t.name: t for t in ours.tensors}
    assert set(mine) == {t.name for t in theirs.tensors}
    for ref in theirs.tensors:  # llama.cpp's layout, permutation included, value for value
        a = dequantize(ref.data, ref.tensor_type)
        b = dequantize(mine[ref.name].data, mine[ref.name].tensor_type)
        assert a.shape == b.shape, ref.name
        assert np.array_equal(a, b) != (".attn_v." in ref.name), ref.name  # only v was tuned
    for key, field in theirs.fields.items():
        same = key.startswith(("llama.", "tokenizer.")) and key != "tokenizer.ggml.pre"
        if same:  # pre: the HF tokenizer here has no digit split (`gpt-2`, llama.cpp: `smollm`)
            assert ours.fields[key].contents() == field.contents(), key
