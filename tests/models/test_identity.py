"""A run records its base (shape + weights fingerprint); an adapter is refused on another base of
the same shape wherever it is loaded (serve/generate/chat/merge through `load_bundle`, `eval`),
loads on its own base in any dtype, and a run from before the record loads with a warning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.bundle import load_bundle
from instructune.models.identity import BASE_MODEL_KEY, base_identity
from instructune.rundir import MANIFEST_FILE


@pytest.fixture(scope="module")
def other_base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base of exactly the tiny model's shape and tokenizer, with other weights."""
    from transformers import AutoTokenizer

    from ..tiny import tiny_llama

    path = tmp_path_factory.mktemp("other-base")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tiny_llama(len(tok), seed=7).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_training_records_the_base(tiny_lora_run: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    record = json.loads((tiny_lora_run / MANIFEST_FILE).read_text())[BASE_MODEL_KEY]
    assert record["config"]["hidden_size"] == 32 and record["config"]["num_hidden_layers"] == 2
    assert record["fingerprint"].startswith("sha256:")
    # the same weights loaded apart from training, in another dtype: the same identity
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
        assert base_identity(model)["fingerprint"] == record["fingerprint"], dtype


def test_adapter_on_another_base_is_refused(
    tiny_lora_run: Path, tiny_model_dir: Path, other_base: Path
) -> None:
    # serve OTHER --adapter RUN (and generate/chat/merge, which load the same way)
    with pytest.raises(ValueError, match="was trained on") as err:
        load_bundle(other_base, adapters=[tiny_lora_run])
    message = str(err.value)
    assert str(tiny_model_dir) in message and str(other_base) in message
    assert "different weights" in message
    # its own base, in another dtype: loads
    bundle = load_bundle(tiny_lora_run, dtype=torch.bfloat16)
    assert bundle.adapters == [tiny_lora_run.name]


def test_eval_refuses_an_adapter_on_another_base(
    tiny_lora_run: Path, other_base: Path, tmp_path: Path
) -> None:
    from instructune.config import load_config
    from instructune.evaluation.run import run_eval

    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(3)]
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model: {{path: {other_base}}}\nadapter: {tiny_lora_run}\n"
        f"eval:\n  tasks:\n    - {{name: gen, path: {data}, type: loss}}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    with pytest.raises(ValueError, match="was trained on"):
        run_eval(load_config(config, []))
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_run_without_the_record_loads_with_a_warning(
    tiny_lora_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(tiny_lora_run, old)
    manifest: dict[str, Any] = json.loads((old / MANIFEST_FILE).read_text())
    del manifest[BASE_MODEL_KEY]
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="instructune.models.identity"):
        bundle = load_bundle(old)
    assert bundle.adapters == ["old-run"]
    assert any("records no base model identity" in r.getMessage() for r in caplog.records)
