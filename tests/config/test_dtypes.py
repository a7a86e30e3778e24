"""The one dtype table: names, their torch dtypes, and the places that take them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instructune.cli.options import add_model_arguments
from instructune.config import ModelConfig
from instructune.config.dtypes import DTYPES, torch_dtype

SRC = Path(__file__).resolve().parents[2] / "src"


def test_names_map_to_torch_dtypes() -> None:
    assert DTYPES == ("float32", "bfloat16", "float16")
    assert [torch_dtype(n) for n in DTYPES] == [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("name", ["fp16", "int8", "auto", "Float32"])
def test_unknown_name_lists_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^dtype '{name}': choose one of \['float32', "):
        torch_dtype(name)


def test_the_table_does_not_import_torch() -> None:
    code = "import sys, instructune.config.dtypes; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)}, check=False)
    assert done.returncode == 0


def test_model_config_and_cli_take_the_same_names() -> None:
    for name in DTYPES:
        assert ModelConfig(dtype=name).dtype == name
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="fp32")  # type: ignore[arg-type]
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "dtype"]
    assert tuple(action.choices or ()) == DTYPES
