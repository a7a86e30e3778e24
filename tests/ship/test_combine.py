"""`combine`: LoRA runs on one base as one adapter run; refusals; eval of several adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from instructune.bundle import load_bundle
from instructune.cli.main import main
from instructune.config import Config
from instructune.evaluation.run import run_eval
from instructune.ship.combine import run_combine
from instructune.ship.merge import run_merge
from instructune.training.run import run_train


def _train(root: Path, model_dir: Path, name: str, r: int, offset: int) -> Path:
    rows = [
        {"instruction": f"What is {i} times {offset}?", "input": "", "output": f"{i * offset}."}
        for i in range(12)
    ]
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    cfg = Config.model_validate(
        {
            "model": {"path": str(model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 64},
            "lora": {"r": r, "alpha": 2 * r, "dropout": 0.0},
            "train": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 5e-2},
            "output_dir": str(root / name),
        }
    )
    return run_train(cfg).out_dir


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("combine")
    return {
        "a": _train(root, tiny_model_dir, "a", 4, 2),
        "b": _train(root, tiny_model_dir, "b", 4, 3),
        "wide": _train(root, tiny_model_dir, "wide", 8, 5),
    }


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    bundle = load_bundle(folder)
    model = bundle.model.merge_and_unload() if bundle.adapters else bundle.model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_cat_is_the_weighted_sum_of_updates(
    runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = run_combine([runs["a"], runs["wide"]], [0.7, 0.3], "cat", tmp_path / "ab")
    assert result.rank == 12
    base, a, wide = _weights(tiny_model_dir), _weights(runs["a"]), _weights(runs["wide"])
    combined = _weights(result.out_dir)
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"):
        expected = base[key] + 0.7 * (a[key] - base[key]) + 0.3 * (wide[key] - base[key])
        torch.testing.assert_close(combined[key], expected, rtol=1e-4, atol=1e-5)
        assert not torch.equal(combined[key], base[key])
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["combine"]["how"] == "cat" and manifest["combine"]["weights"] == [0.7, 0.3]


def test_combined_run_merges_with_parity(runs: dict[str, Path], tmp_path: Path) -> None:
    out = run_combine([runs["a"], runs["b"]], [0.5, 0.5], "linear", tmp_path / "ab").out_dir
    assert run_merge(out, tmp_path / "merged").parity.passed


def test_ties_from_the_cli(runs: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "ties"
    args = ["combine", str(runs["a"]), str(runs["b"]), "--weights", "0.7", "0.3"]
    assert main([*args, "--how", "ties", "--density", "0.5", "--out", str(out)]) == 0
    assert "rank 4" in capsys.readouterr().out
    assert load_bundle(out).adapters == ["ties"]


def test_refusals(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"--how linear needs adapters of one rank, got r=\[4, 8\]"
    ):
        run_combine([runs["a"], runs["wide"]], [0.5, 0.5], "linear", tmp_path / "x")
    with pytest.raises(ValueError, match="--how ties needs --density"):
        run_combine([runs["a"], runs["b"]], [0.5, 0.5], "ties", tmp_path / "x")
    with pytest.raises(ValueError, match="--weights has 1 values for 2 runs"):
        run_combine([runs["a"], runs["b"]], [1.0], "linear", tmp_path / "x")
    other = tmp_path / "other"
    shutil.copytree(runs["b"], other)
    config = other / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["model"]["path"] = str(tmp_path / "another-base")
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="different base models"):
        run_combine([runs["a"], other], [0.5, 0.5], "linear", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_eval_reports_several_adapters_against_the_base(
    runs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    ab = run_combine([runs["a"], runs["b"]], [0.5, 0.5], "linear", tmp_path / "ab").out_dir
    rows = [
        {"instruction": f"What is {i} times 2?", "input": "", "output": f"{2 * i}."}
        for i in range(8)
    ]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "adapters": {"a": str(runs["a"]), "b": str(runs["b"]), "ab": str(ab)},
            "eval": {"tasks": [{"name": "sums", "path": str(task), "type": "loss"}]},
            "output_dir": str(tmp_path / "eval"),
        }
    )
    result = run_eval(cfg)
    losses = {name: result.metrics[name]["sums"]["loss"] for name in ("base", "a", "b", "ab")}
    assert len(set(losses.values())) == 4, losses
    for name in ("a", "b", "ab"):
        comp = result.metrics["comparisons"][name]["sums"]["loss"]
        assert comp["delta"] == pytest.approx(losses[name] - losses["base"])
        assert 0.0 <= comp["p_value"] <= 1.0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert all(f"| base | {name} |" in report for name in ("a", "b", "ab"))


def test_adapter_and_adapters_exclusive() -> None:
    with pytest.raises(ValueError, match="adapter and adapters can't both be set"):
        Config.model_validate({"adapter": "runs/a", "adapters": {"b": "runs/b"}})
