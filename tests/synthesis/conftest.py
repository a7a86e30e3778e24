"""Fixtures: a config for a small run and the scripted backend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the scripted world, shared with subprocesses

from world import ScriptedBackend, answer, write_seeds

from instructune.config import load_config


@pytest.fixture
def seeds_file(tmp_path: Path) -> Path:
    return write_seeds(tmp_path / "seeds.jsonl")


@pytest.fixture
def make_cfg(tmp_path: Path, seeds_file: Path) -> Any:
    def make(method: str = "self_instruct", out: str = "out", **overrides: Any) -> Any:
        path = tmp_path / f"{method}.yaml"
        path.write_text(
            f"synthesize:\n  method: {method}\n  seeds: {seeds_file}\n  num_instructions: 12\n"
            f"  request_batch_size: 4\noutput_dir: {tmp_path / out}\n"
        )
        return load_config(path, [f"{k}={v}" for k, v in overrides.items()])

    return make


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend(answer)
