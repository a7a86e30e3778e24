"""Every failure of the real CLI is one `error:` line (exit code and message asserted), early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from instructune.cli.main import main

ROWS = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(8)]


def _cfg(tmp_path: Path, model: Path | str, extra: str = "") -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {model}}}\ndata:\n  train: [{{path: {data}}}]\n  max_length: 128\n"
        f"{extra}output_dir: {tmp_path / 'run'}\n"
    )
    return cfg


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "INSTRUCTUNE_DEBUG"}
    full_env |= {"HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "instructune", *args], capture_output=True, text=True, env=full_env
    )


def _one_error(err: str) -> str:
    """The error line; asserts there is no traceback and nothing but the error (and hint)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.max_length.foo=1", "data.max_length is a value (128), not a section"),
        ("model.path.x=1", "model.path is a value"),
        ("data.max_length=[1,", "the value is not valid YAML"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any, override: str, expected: str
) -> None:
    assert main(["validate", str(_cfg(tmp_path, tiny_model_dir)), override]) == 2
    line = _one_error(capsys.readouterr().err)
    assert expected in line and repr(override) in line


def test_options_and_overrides_in_any_order(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    cfg = str(_cfg(tmp_path, tiny_model_dir))
    assert main(["prepare", cfg, "--dump", "data.max_length=100"]) == 0
    assert "max_length 100" in capsys.readouterr().out
    assert (tmp_path / "run" / "prepared" / "train.jsonl").is_file()
    assert main(["validate", cfg, "data.max_length=90", "data.seed=3"]) == 0
    out = capsys.readouterr().out
    assert "max_length: 90" in out and "seed: 3" in out


def test_unknown_option_is_still_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(_cfg(tmp_path, tiny_model_dir)), "--nope", "data.seed=1"])
    assert exit_info.value.code == 2


def test_duplicate_yaml_keys_are_an_error(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    cfg = _cfg(tmp_path, tiny_model_dir, extra="data:\n  max_length: 64\n")
    assert main(["validate", str(cfg)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert "'data' appears twice" in line and "lines 2 and 5" in line


def test_lora_alpha_must_be_positive(tmp_path: Path, tiny_model_dir: Path, capsys: Any) -> None:
    assert main(["validate", str(_cfg(tmp_path, tiny_model_dir)), "lora.alpha=0"]) == 2
    assert "lora.alpha" in capsys.readouterr().err


def test_missing_relative_model_path_offline(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    out = _cli(["prepare", str(_cfg(tmp_path, "models/nope"))])
    assert out.returncode == 1
    line = _one_error(out.stderr)
    assert "'models/nope' is not a local folder" in line and "Hub is offline" in line
    assert str(tmp_path / "models" / "nope") in line


def test_hub_id_with_unreachable_hub_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    # port 9 (discard) on localhost: refused at once, as an unreachable Hub is after its retries
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = _cli(["prepare", str(_cfg(tmp_path, "someorg/somemodel"))], env)
    assert out.returncode == 1
    line = _one_error(out.stderr)
    assert "not a local folder" in line and "Hub is unreachable" in line
    assert time.monotonic() - started < 30


def test_output_dir_that_is_a_file(tmp_path: Path, tiny_model_dir: Path, capsys: Any) -> None:
    (tmp_path / "taken").write_text("x")
    cfg = str(_cfg(tmp_path, tiny_model_dir))
    assert main(["train", cfg, f"output_dir={tmp_path / 'taken'}"]) == 1
    assert "is a file, not a folder" in _one_error(capsys.readouterr().err)
    assert main(["prepare", cfg, f"output_dir={tmp_path / 'taken' / 'sub'}"]) == 1
    assert "which is a file" in _one_error(capsys.readouterr().err)


def test_output_dir_under_unwritable_parent(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    if os.geteuid() == 0:
        parent = Path("/sys")  # root writes through permissions, not into sysfs
    else:
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o500)
    cfg = str(_cfg(tmp_path, tiny_model_dir))
    started = time.monotonic()
    assert main(["train", cfg, f"output_dir={parent / 'run'}"]) == 1
    assert "can't be written" in _one_error(capsys.readouterr().err)
    assert time.monotonic() - started < 5  # before loading data or model


def test_template_that_loops_forever_is_bounded(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    template = tmp_path / "loop.jinja"
    template.write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    cfg = str(_cfg(tmp_path, tiny_model_dir, extra="  on_error: skip\n"))
    started = time.monotonic()
    assert main(["prepare", cfg, f"data.template={template}"]) == 1
    line = _one_error(capsys.readouterr().err)
    assert "loop.jinja" in line and "range() items in one render" in line
    assert time.monotonic() - started < 20
    template.write_text("{{ range(10**9) | length }}{{ 'x' }}")
    assert main(["prepare", cfg, f"data.template={template}"]) == 1
    assert "range of 1000000000 items" in _one_error(capsys.readouterr().err)


def test_folder_without_tokenizer_files(tmp_path: Path, tiny_model_dir: Path, capsys: Any) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, bare / name)
    assert main(["prepare", str(_cfg(tmp_path, bare))]) == 1
    assert "has no tokenizer files" in _one_error(capsys.readouterr().err)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter saved from the tiny Llama (hidden 32)."""
    from peft import LoraConfig, get_peft_model

    from instructune.models import save_adapter

    from ..tiny import CHATML_TEMPLATE, tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("adapter")
    tok = tiny_tokenizer()
    model: Any = get_peft_model(tiny_llama(len(tok)), LoraConfig(r=4, target_modules=["q_proj"]))
    save_adapter(model, tok, CHATML_TEMPLATE, root / "adapter")
    return root / "adapter"


def _eval_cfg(tmp_path: Path, model: Path, adapter: Path) -> Path:
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"model: {{path: {model}}}\nadapter: {adapter}\n"
        f"eval:\n  tasks: [{{name: gen, path: {data}, type: loss}}]\n"
        f"output_dir: {tmp_path / 'eval'}\n"
    )
    return cfg


def test_eval_adapter_of_another_base_is_refused_before_the_base_pass(
    tmp_path: Path, adapter_dir: Path
) -> None:
    from ..tiny import tiny_llama, tiny_tokenizer

    other = tmp_path / "wide"
    tok = tiny_tokenizer()
    tiny_llama(len(tok), hidden=64).save_pretrained(other)
    tok.save_pretrained(other)
    out = _cli(["eval", str(_eval_cfg(tmp_path, other, adapter_dir))])
    assert out.returncode == 1
    line = _one_error(out.stderr)
    assert "(hidden 32)" in line and f"this model is {other} (hidden 64)" in line
    assert "evaluating base" not in out.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_adapter_folder_without_weights(
    tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path, capsys: Any
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir, broken)
    (broken / "adapter_model.safetensors").unlink()
    assert main(["eval", str(_eval_cfg(tmp_path, tiny_model_dir, broken))]) == 1
    line = _one_error(capsys.readouterr().err)
    assert "no adapter_model.safetensors" in line and "Repo id" not in line


def test_unanticipated_error_is_one_line_with_debug_hint(tmp_path: Path) -> None:
    # a config.json that is not JSON: transformers raises an error no message of ours anticipates
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{nope")
    (broken / "tokenizer.json").write_text("{nope")
    out = _cli(["prepare", str(_cfg(tmp_path, broken))])
    assert out.returncode == 1
    _one_error(out.stderr)
    assert "run with INSTRUCTUNE_DEBUG=1 for the traceback" in out.stderr
    debug = _cli(["prepare", str(_cfg(tmp_path, broken))], {"INSTRUCTUNE_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
