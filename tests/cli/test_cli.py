"""The real entry point: `instructune --help`, `validate`, `prepare` end to end, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instructune.cli.main import main


def _cfg(tmp_path: Path, model_dir: Path, rows: list[dict[str, Any]], extra: str = "") -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {model_dir}}}\n"
        f"data:\n  train: [{{path: {data}}}]\n  max_length: 128\n{extra}"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    return cfg


ROWS = [
    {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."}
    for i in range(12)
]


def test_help_lists_commands_through_console_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("prepare", "train", "eval", "validate"):
        assert command in out.stdout


def test_validate_prints_resolved_config(tmp_path: Path, tiny_model_dir: Path, capsys: Any) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, ROWS)
    assert main(["validate", str(cfg), "data.max_length=64"]) == 0
    out = capsys.readouterr().out
    assert "max_length: 64" in out and "config OK" in out


def test_config_error_exit_code_and_message(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, ROWS)
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "prepare", str(cfg), "data.packing=maybe"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "data.packing" in out.stderr and "'maybe'" in out.stderr


def test_prepare_end_to_end_writes_summary_dump_and_manifest(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, ROWS, extra="  eval_fraction: 0.25\n")
    assert main(["prepare", str(cfg), "--dump"]) == 0
    out = capsys.readouterr().out
    assert "format alpaca" in out and "detected" in out
    assert "[[" in out  # an example rendered with its trained span marked
    run = tmp_path / "run"
    summary = json.loads((run / "prepared" / "summary.json").read_text())
    assert summary["splits"]["train"]["examples"] + summary["splits"]["eval"]["examples"] == 12
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["data_hashes"]) == {"train", "eval"}
    assert manifest["versions"]["torch"].startswith("2.13.0")
    rows = [
        json.loads(line) for line in (run / "prepared" / "train.jsonl").read_text().splitlines()
    ]
    assert len(rows) == summary["splits"]["train"]["examples"]
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"])
        trained = [t for t in row["labels"] if t != -100]
        assert trained and trained[-1] == 2  # the response ends with <|im_end|> (eos)


def test_bad_row_is_a_clean_error_naming_file_and_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, ROWS)
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text() + "{not json\n")
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "prepare", str(cfg)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "train.jsonl" in out.stderr and "13" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("on_error", ["skip"])
def test_skip_counts_dropped_rows(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any, on_error: str
) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, ROWS, extra=f"  on_error: {on_error}\n")
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text() + "{not json\n" + json.dumps({"instruction": "x"}) + "\n")
    assert main(["prepare", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "rows read 14, kept 12" in out
