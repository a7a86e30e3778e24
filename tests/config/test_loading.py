"""Config loading: overrides, pointed errors, and every shipped YAML validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from instructune.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


BASE = """
model: {path: smollm2-135m-instruct}
data:
  train: [{path: data/train.jsonl, format: alpaca}]
  max_length: 512
output_dir: runs/x
"""


def test_defaults_and_types(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.data is not None
    assert cfg.data.max_length == 512
    assert cfg.data.packing is True
    assert cfg.data.template == "chat"
    assert cfg.data.train[0].format == "alpaca"
    assert cfg.method == "lora"
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_dotted_overrides_parse_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, BASE),
        [
            "data.max_length=1024",
            "data.packing=false",
            "train.learning_rate=3e-4",
            "lora.target_modules=all-linear",
            "data.train.0.path=other.jsonl",
            "eval.tasks=[]",
        ],
    )
    assert cfg.data is not None
    assert cfg.data.max_length == 1024
    assert cfg.data.packing is False
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.lora.target_modules == "all-linear"
    assert cfg.data.train[0].path == "other.jsonl"
    assert cfg.eval is not None and cfg.eval.tasks == []


def test_unknown_key_names_path_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["data.max_lenght=5"])
    msg = str(err.value)
    assert "data.max_lenght: unknown key" in msg
    assert "did you mean 'max_length'" in msg
    assert "packing" in msg  # the allowed keys are listed


def test_bad_literal_names_key_value_and_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.lr_scheduler=cosine_annealing"])
    msg = str(err.value)
    assert "train.lr_scheduler" in msg
    assert "'cosine_annealing'" in msg
    assert "cosine_with_restarts" in msg


def test_bad_number_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["data.max_length=-3"])
    assert "data.max_length" in str(err.value)
    assert "-3" in str(err.value)


def test_unknown_template_and_format_list_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["data.template=vicuna"])
    assert "data.template" in str(err.value) and "alpaca" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["data.train.0.format=csvish"])
    assert "data.train.0.format" in str(err.value) and "sharegpt" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(
            write(tmp_path, BASE), ["eval.tasks=[{name: t, path: x.jsonl, format: csvish}]"]
        )
    assert "eval.tasks.0.format" in str(err.value) and "dolly" in str(err.value)


def test_conflicting_options_named_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["train.warmup_ratio=0.1", "train.warmup_steps=10"])
    assert "warmup_ratio" in str(err.value) and "warmup_steps" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(
            write(tmp_path, BASE), ["data.eval_fraction=0.1", "data.eval=[{path: e.jsonl}]"]
        )
    assert "data.eval" in str(err.value) and "eval_fraction" in str(err.value)


def test_required_section_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a `data:` section"):
        load_config(write(tmp_path, "output_dir: x\n"), require=["data"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(write(tmp_path, BASE), ["data.max_length"])


def _assert_kept(written: Any, loaded: Any, where: str) -> None:
    """Every value the YAML writes is the loaded config's value at the same key path."""
    if isinstance(written, dict):
        assert isinstance(loaded, dict), where
        for key, value in written.items():
            assert key in loaded, f"{where}.{key}"
            _assert_kept(value, loaded[key], f"{where}.{key}")
    elif isinstance(written, list):
        assert isinstance(loaded, list) and len(loaded) == len(written), where
        for i, (value, got) in enumerate(zip(written, loaded, strict=True)):
            _assert_kept(value, got, f"{where}.{i}")
    elif isinstance(loaded, float) and isinstance(written, str):  # YAML 1.1 reads 2e-4 as text
        assert loaded == float(written), where
    else:
        assert loaded == written, where


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written and "output_dir" in written  # every shipped config says where it writes
    _assert_kept(written, cfg.model_dump(), path.name)


_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
"""A "billion laughs" YAML: 9 levels of 9 aliases, 9**9 strings once expanded, 1 KB as text."""

_LOAD_UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from instructune.config import ConfigError, load_config
try:
    load_config(sys.argv[1])
except ConfigError as err:
    print(err)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child would report its parent's peak
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024)
"""


def test_yaml_alias_bomb_is_refused_in_one_line_with_little_memory(tmp_path: Path) -> None:
    """An alias bomb is refused before it is expanded: in 1 GB of address space (the expanded
    value needs many GB), with a one-line error naming the file, and no repr of the value."""
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(BASE + _LAUGHS)
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_UNDER_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    message, peak_mb = done.stdout.strip().splitlines()
    assert message.startswith(f"{path}: ") and "alias" in message
    assert "lol" not in message and len(message) < 300
    assert int(peak_mb) < 200


def test_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "train: {learning_rate: &lr 0.001, warmup_ratio: *lr}\n")
    cfg = load_config(path)
    assert cfg.train.learning_rate == cfg.train.warmup_ratio == 0.001


def test_long_values_are_cut_short_in_validation_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("output_dir: runs/x", f"output_dir: [{'x, ' * 5000}x]"))
    with pytest.raises(ConfigError, match="output_dir") as err:
        load_config(path)
    assert len(str(err.value)) < 1000
