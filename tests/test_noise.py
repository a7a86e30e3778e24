"""Known upstream noise is silenced at its source; real warnings still show."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from instructune.noise import BNB_KERNEL_MESSAGE, BNB_LOGGER, silence_known_noise

GC_TEXT = "`is_gradient_checkpointing` is deprecated and will be removed in v6."


def test_bnb_kernel_notice_dropped_other_bnb_messages_kept(caplog: Any) -> None:
    silence_known_noise()
    silence_known_noise()  # idempotent: one filter
    bnb = logging.getLogger(BNB_LOGGER)
    assert len(bnb.filters) == 1
    with caplog.at_level(logging.WARNING):
        bnb.warning("%s: No module named 'kernels'. Please pip install kernels", BNB_KERNEL_MESSAGE)
        bnb.warning("a real bitsandbytes problem")
    assert "a real bitsandbytes problem" in caplog.text
    assert BNB_KERNEL_MESSAGE not in caplog.text


def test_gradient_checkpointing_deprecation_dropped_only_from_transformers() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_noise()
        for module, text in [
            ("transformers.modeling_utils", GC_TEXT),  # the noise
            ("transformers.modeling_utils", "something else is deprecated"),  # real
            ("mycode", GC_TEXT),  # same text, not from transformers
        ]:
            warnings.warn_explicit(text, FutureWarning, "f.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["something else is deprecated", GC_TEXT]


def test_first_training_run_prints_neither(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {tiny_model_dir}}}\ndata: {{train: [{{path: {data}}}], max_length: 64}}\n"
        "train: {max_steps: 1, micro_batch_size: 2, gradient_checkpointing: true}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "train", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gemm_4bit_forward" not in out.stderr
    assert "is_gradient_checkpointing" not in out.stderr
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


PEFT_NAME_TEXT = (
    "Adapter name '{}' should not be contained in the prefix 'lora_'. This may lead to "
    "reinitialization of the adapter weights during loading."
)


def test_peft_adapter_name_warning_dropped_missing_keys_kept() -> None:
    noise = PEFT_NAME_TEXT.format("a")
    missing = noise.split(". This")[0] + ". This could be the potential reason for missing keys."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_noise()
        for module, text in [
            ("peft.peft_model", noise),  # the noise
            ("peft.peft_model", missing),  # real: keys are missing
            ("mycode", noise),  # same text, not from peft
        ]:
            warnings.warn_explicit(text, UserWarning, "f.py", 1, module=module)
    assert [str(w.message) for w in seen] == [missing, noise]


def test_adapters_named_like_peft_prefixes_load_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Folders `a` and `lora` (substrings of peft's "lora_") load exactly like any other name,
    alone or as a second adapter, and without peft's adapter-name warning."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from instructune.bundle import load_bundle
    from instructune.config import Config, dump_config

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_()  # LoRA's B starts at zero: give the adapter an effect
    cfg = Config.model_validate({"model": {"path": str(tiny_model_dir)}})
    for name in ("run", "a", "lora"):
        model.save_pretrained(tmp_path / name)
        (tmp_path / name / "config.yaml").write_text(dump_config(cfg))
    shutil.copytree(tmp_path / "run", tmp_path / "other")
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        alone = load_bundle(tmp_path / "run").model
        pair = load_bundle(tmp_path / "other", adapters=[tmp_path / "a", tmp_path / "lora"]).model
    assert not [w for w in seen if "should not be contained" in str(w.message)]
    with torch.no_grad():
        expected = alone(input_ids=ids).logits
        with alone.disable_adapter():
            base = alone(input_ids=ids).logits
        assert not torch.allclose(expected, base)
        for name in ("a", "lora"):
            pair.set_adapter(name)
            assert torch.equal(pair(input_ids=ids).logits, expected)
