"""Clear errors and quiet output of the ship commands: export refuses a prompt-tuning run as merge
does, damaged adapter files are named, and merge/export/combine print their summary once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instructune.cli.main import main
from instructune.config import Config
from instructune.training.run import run_train


def test_export_of_a_prompt_tuning_run_gives_merges_refusal(
    tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": [{"path": str(data)}], "max_length": 48, "packing": False},
            "method": "prompt_tuning",
            "prompt_tuning": {"num_virtual_tokens": 2},
            "train": {"max_steps": 1, "micro_batch_size": 4},
            "output_dir": str(tmp_path / "pt"),
        }
    )
    run = run_train(cfg).out_dir
    capsys.readouterr()  # training's progress
    for command in (["merge", str(run), "--out", str(tmp_path / "m")], ["export", str(run)]):
        if command[0] == "export":
            command += ["--out", str(tmp_path / "pt.gguf")]
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {run} is a method: prompt_tuning run"), err
        assert "nothing to merge" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pt.gguf").exists()


def _damage(run: Path, folder: Path, how: str) -> Path:
    shutil.copytree(run, folder)
    weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if how == "empty weights":
        weights.write_bytes(b"")
        return weights
    if how == "cut weights":
        weights.write_bytes(weights.read_bytes()[:-64])
        return weights
    config.write_text(config.read_text()[:40])  # cut mid-JSON
    return config


@pytest.mark.parametrize("how", ["empty weights", "cut weights", "cut config"])
def test_damaged_adapter_files_are_named(
    how: str, tiny_lora_run: Path, tmp_path: Path, capsys: Any
) -> None:
    folder = tmp_path / "run"
    damaged = _damage(tiny_lora_run, folder, how)
    commands = [
        ["generate", str(folder), "--prompt", "hi", "--max-new-tokens", "1"],
        ["merge", str(folder), "--out", str(tmp_path / "merged")],
    ]
    for command in commands:
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {damaged} "), err  # before any weights load
        assert "copy it again or retrain" in err and len(err.strip().splitlines()) == 1


def test_merge_export_combine_print_their_summary_once(tiny_lora_run: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(tiny_lora_run, twin)
    run = str(tiny_lora_run)
    commands = [
        ["merge", run, "--out", str(tmp_path / "merged"), "--prompts", "1"],
        ["export", run, "--out", str(tmp_path / "x.gguf"), "--prompts", "1"],
        ["combine", run, str(twin), "--weights", "0.5", "0.5", "--out", str(tmp_path / "c")],
    ]
    # the real entry point with its logging set up as a user's shell gets it, in one process
    script = (
        "import sys; from instructune.cli.main import main; "
        f"sys.exit(max(main(argv) for argv in {commands!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = (out.stdout + out.stderr).splitlines()
    assert len([line for line in lines if line.startswith("parity ok")]) == 2, lines
    assert len([line for line in lines if line.startswith("combined 2 adapters")]) == 1, lines
