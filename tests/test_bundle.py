"""load_bundle on the tiny model: a LoRA run, a merged folder, a plain model path,
several adapters on one base, and the errors for folders that hold no model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.bundle import load_bundle
from instructune.rundir import ADAPTER_WEIGHTS_FILE, CONFIG_FILE, TEMPLATE_FILE, RunDir


def _logits(model: Any, vocab: int) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_checkpoint_folder_uses_its_runs_config_and_template(
    tiny_lora_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    for item in tiny_lora_run.iterdir():
        if item.is_file():
            keep_in_run = item.name in (CONFIG_FILE, TEMPLATE_FILE)
            shutil.copy(item, (run if keep_in_run else ckpt) / item.name)
    assert RunDir(ckpt).owner == RunDir(run)
    assert RunDir(ckpt).template_text() == RunDir(tiny_lora_run).template_text()
    assert RunDir(ckpt).base_model() == RunDir(tiny_lora_run).base_model()
    bundle = load_bundle(ckpt)
    assert bundle.template.source_text == RunDir(tiny_lora_run).template_text()
    assert bundle.adapters == ["checkpoint-3"]


def test_adapter_run_loads_base_plus_adapter(tiny_lora_run: Path, tiny_model_dir: Path) -> None:
    bundle = load_bundle(tiny_lora_run)
    assert bundle.adapters == [tiny_lora_run.name] and bundle.name == tiny_lora_run.name
    assert not bundle.model.training
    assert bundle.template.source_text == RunDir(tiny_lora_run).template_text()
    base = load_bundle(tiny_model_dir)
    assert base.adapters == []
    vocab = len(bundle.tokenizer)
    # 3 steps at a high learning rate move the adapter off its zero start.
    assert (_logits(bundle.model, vocab) - _logits(base.model, vocab)).abs().max() > 1e-3


def test_merged_folder_matches_adapter_run(tiny_lora_run: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_lora_run)
    vocab = len(bundle.tokenizer)
    expected = _logits(bundle.model, vocab)
    merged = tmp_path / "merged"
    bundle.model.merge_and_unload().save_pretrained(merged)
    bundle.tokenizer.save_pretrained(merged)
    (merged / TEMPLATE_FILE).write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    loaded = load_bundle(merged)
    assert RunDir(merged).kind == "model" and loaded.adapters == []
    assert loaded.template.source_text == "{{ messages[0]['content'] }}"
    assert (_logits(loaded.model, vocab) - expected).abs().max() < 1e-4


def test_plain_model_path_uses_the_named_template(tiny_model_dir: Path) -> None:
    chat = load_bundle(str(tiny_model_dir))
    assert chat.template.name == "chat"
    assert chat.template.source_text == chat.tokenizer.chat_template
    alpaca = load_bundle(str(tiny_model_dir), template="alpaca", dtype=torch.bfloat16)
    assert alpaca.template.name == "alpaca"
    assert next(alpaca.model.parameters()).dtype == torch.bfloat16


def test_several_adapters_switch_by_name(tiny_lora_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    second = tmp_path / "second"
    shutil.copytree(tiny_lora_run, second)
    weights = load_file(second / ADAPTER_WEIGHTS_FILE)
    save_file(
        {k: v * 3 if "lora_B" in k else v for k, v in weights.items()},
        second / ADAPTER_WEIGHTS_FILE,
    )

    both = load_bundle(tiny_lora_run, adapters=[second])
    assert both.adapters == [tiny_lora_run.name, "second"]
    vocab = len(both.tokenizer)
    first = _logits(both.model, vocab)
    both.model.set_adapter("second")
    switched = _logits(both.model, vocab)
    assert (first - switched).abs().max() > 1e-3
    alone = load_bundle(second)
    assert (switched - _logits(alone.model, vocab)).abs().max() < 1e-5


def test_missing_files_are_one_line_errors(
    tiny_lora_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(tiny_lora_run / CONFIG_FILE, unfinished / CONFIG_FILE)
    with pytest.raises(FileNotFoundError, match="without weights"):
        load_bundle(unfinished)
    with pytest.raises(FileNotFoundError, match=r"has no adapter_config\.json"):
        load_bundle(tiny_lora_run, adapters=[tiny_model_dir])
    with pytest.raises(FileNotFoundError, match=r"can.t resolve model\.path"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="two adapters are named"):
        load_bundle(tiny_lora_run, adapters=[tiny_lora_run])
