"""The `synthesize:` section: pointed errors, and the command requires it."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructune.cli.main import main
from instructune.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_bad_values_name_key_value_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("synthesize: {method: self_instruct, seeds: s.jsonl}\noutput_dir: out\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["synthesize.method=wizard"])
    assert "synthesize.method" in str(err.value) and "evol_instruct" in str(err.value)
    with pytest.raises(ConfigError, match=r"synthesize\.backend\.typo: unknown key"):
        load_config(path, ["synthesize.backend.typo=1"])
    with pytest.raises(ConfigError, match=r"synthesize\.evol_instruct\.operations"):
        load_config(path, ["synthesize.evol_instruct.operations=[deepen, shrink]"])
    with pytest.raises(ConfigError, match="min_words"):
        load_config(path, ["synthesize.self_instruct.min_words=200"])
    with pytest.raises(
        ConfigError, match=r"synthesize\.backend\.model is required for type openai"
    ):
        load_config(path, ["synthesize.backend.type=openai"])
    path.write_text("synthesize: {method: unnatural}\n")
    with pytest.raises(ConfigError, match=r"synthesize\.seeds"):
        load_config(path)


def test_command_requires_the_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synthesize", str(ROOT / "configs/demo.yaml")]) == 2
    assert "synthesize" in capsys.readouterr().err


def test_missing_seed_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"synthesize: {{seeds: {tmp_path}/nope.jsonl}}\noutput_dir: {tmp_path}/o\n")
    assert main(["synthesize", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: synthesize.seeds: no such file {tmp_path}/nope.jsonl"
