"""`merge` on the tiny model: a LoRA run and a QLoRA run folded into a dense base, saved,
reloaded from disk and parity-checked; held-out prompts from the run's eval data; bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from instructune.bundle import load_bundle
from instructune.cli.main import main
from instructune.config import dump_config
from instructune.rundir import RunDir
from instructune.ship.merge import run_merge
from instructune.ship.parity import ParityError, compare_logits, parity_prompts


def _train(tiny_model_dir: Path, root: Path, method: str) -> Path:
    from instructune.config import Config
    from instructune.training.run import run_train

    rows = [
        {"instruction": f"Name the number {i}.", "input": "", "output": f"It is {i}."}
        for i in range(12)
    ]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 64},
            "method": method,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "quantization": {"compute_dtype": "float32"},
            "train": {"max_steps": 2, "micro_batch_size": 4, "learning_rate": 5e-2},
            "output_dir": str(root / method),
        }
    )
    return run_train(cfg).out_dir


def test_merge_lora_run(tiny_lora_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_merge(tiny_lora_run, tmp_path / "merged")
    out = result.out_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "parity.json"):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()
    assert (out / "template.jinja").read_bytes() == (tiny_lora_run / "template.jinja").read_bytes()
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["argmax_agreement"] == 1
    assert parity["prompt_source"].startswith("built-in chats (the run held out no eval data")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "merge" and manifest["merge"]["run"] == str(tiny_lora_run)
    # The merged model is the tuned one, not the base: the adapter changed the logits.
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    merged = load_bundle(out).model
    base = load_bundle(tiny_model_dir).model
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-3


def test_bfloat16_merge_is_saved_in_bfloat16(tiny_lora_run: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    result = run_merge(tiny_lora_run, tmp_path / "bf16", dtype="bfloat16")
    assert result.parity.storage == "bfloat16" and result.parity.passed
    with safe_open(str(result.out_dir / "model.safetensors"), framework="pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}  # noqa: SIM118


def test_qlora_run_merges_into_a_dense_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    run = _train(tiny_model_dir, tmp_path, "qlora")
    result = run_merge(run, tmp_path / "merged")
    assert result.parity.passed and result.parity.storage == "float32"
    with safe_open(str(result.out_dir / "model.safetensors"), framework="pt") as handle:
        dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}  # noqa: SIM118
        names = list(handle.keys())
    assert dtypes == {"F32"}  # dense, not 4-bit: no packed uint8 weights, no quant state
    assert not any("absmax" in n or "quant" in n or "lora" in n for n in names)
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["merge"]["method"] == "qlora"


def test_parity_prompts_come_from_the_runs_eval_data(tiny_lora_run: Path, tmp_path: Path) -> None:
    run = RunDir(tiny_lora_run)
    cfg = run.config()
    assert cfg is not None and cfg.data is not None
    held = tmp_path / "held.jsonl"
    rows = [{"instruction": f"Held out {i}?", "input": "", "output": f"Yes {i}."} for i in range(3)]
    held.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg.data.eval = [cfg.data.train[0].model_copy(update={"path": str(held)})]
    copy = tmp_path / "run"
    copy.mkdir()
    for item in tiny_lora_run.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    (copy / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    bundle = load_bundle(copy)
    ids, source = parity_prompts(RunDir(copy), bundle.template, bundle.tokenizer, count=2)
    assert source == f"the run's eval data ({held})"
    assert len(ids) == 2
    assert "Held out 1?" in bundle.tokenizer.decode(ids[1])
    held.unlink()  # moved data: the check falls back to the built-in chats and says why
    ids, source = parity_prompts(RunDir(copy), bundle.template, bundle.tokenizer, count=3)
    assert len(ids) == 3 and source.startswith("built-in chats (its eval data can't be read")


def test_out_of_tolerance_is_an_error() -> None:
    ref = [torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 10]
    close = [ref[0] + 1e-5]
    far = [ref[0] + torch.linspace(0, 0.2, 50)]
    ok = compare_logits(ref, close, storage="float32", names=("a", "b"), prompt_source="t")
    ok.check()
    bad = compare_logits(ref, far, storage="float32", names=("a", "b"), prompt_source="t")
    assert bad.max_abs_diff == pytest.approx(0.2, rel=1e-4) and not bad.passed
    with pytest.raises(ParityError, match=r"parity FAILED .*max \|Δlogit\| 0\.2"):
        bad.check()
    # The same difference is within what bfloat16 storage is allowed.
    compare_logits(ref, far, storage="bfloat16", names=("a", "b"), prompt_source="t").check()


def test_cli_merge_and_its_errors(
    tiny_lora_run: Path, tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    assert main(["merge", str(tiny_lora_run), "--out", str(tmp_path / "m"), "--prompts", "2"]) == 0
    assert "parity ok (merged vs base+adapter, float32)" in capsys.readouterr().out
    assert main(["merge", str(tiny_lora_run), "--out", str(tmp_path / "m")]) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["merge", str(tiny_model_dir), "--out", str(tmp_path / "n")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "merge needs a LoRA training output_dir" in err
    assert len(err.strip().splitlines()) == 1
