"""The run folder: RunDir's paths, readers and writers, and the rule that a run never writes over
a user's files (the output-folder rules of train, prepare, build, synthesize, and the output files
of generate and export, through the real CLI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instructune.cli.main import main
from instructune.config import Config, ConfigError, ModelConfig
from instructune.rundir import (
    CONFIG_FILE,
    MANIFEST_FILE,
    RunDir,
    claim_output_dir,
    written_by_instructune,
)

ROWS = [{"instruction": f"Say {i}.", "input": "", "output": f"It is {i}."} for i in range(8)]


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _train_config(tmp_path: Path, model: Path, data: Path, out: str | Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{path: {model}}}\ndata: {{train: [{{path: {data}}}], max_length: 64}}\n"
        "method: lora\nlora: {r: 2, alpha: 4}\ntrain: {max_steps: 1, micro_batch_size: 2}\n"
        f"output_dir: '{out}'\n"
    )
    return cfg


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_run_dir_layout(tiny_lora_run: Path, tiny_model_dir: Path) -> None:
    run = RunDir(tiny_lora_run)
    assert run.kind == "adapter"
    assert run.adapter_weights_file.is_file() and run.metrics_file.is_file()
    assert run.base_model().path == str(tiny_model_dir)
    assert run.template_text() == run.template_file.read_text(encoding="utf-8")
    assert run.config() is not None and run.config().method == "lora"  # type: ignore[union-attr]
    assert RunDir(tiny_model_dir).kind == "model"
    assert RunDir(tiny_model_dir).config() is None


def test_base_from_adapter_config_without_config_yaml(tiny_lora_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_lora_run, copy)
    (copy / CONFIG_FILE).unlink()
    saved = json.loads((copy / "adapter_config.json").read_text())
    assert RunDir(copy).base_model().path == saved["base_model_name_or_path"]


def test_paths_of_a_checkpoint_folder_fall_back_to_its_runs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    ckpt = RunDir(run.checkpoint(3))
    ckpt.path.mkdir(parents=True)
    assert ckpt.owner == run and run.owner is None
    assert ckpt.config_file == run.path / CONFIG_FILE  # the Trainer saves none into a checkpoint
    assert ckpt.template_file == run.template_file
    assert ckpt.metrics_file == ckpt.path / "metrics.jsonl"  # only config and template fall back
    ckpt.write_template("{{ mine }}")
    assert ckpt.template_file == ckpt.path / "template.jinja"
    assert run.manifest() is None and ckpt.manifest() is None
    run.write_manifest(None, "train", {"base_model": {"sha": "x"}})
    assert ckpt.manifest() is not None and ckpt.manifest()["base_model"] == {"sha": "x"}  # type: ignore[index]


def test_writers_put_each_file_in_its_place(tmp_path: Path) -> None:
    cfg = Config(model=ModelConfig(path="some/model"), output_dir=str(tmp_path / "out"))
    run = RunDir(cfg.output_path)
    manifest = run.write_manifest(cfg, "train", {"results": {"loss": 1.5}})
    assert manifest == run.manifest_file and written_by_instructune(run.path)
    saved = json.loads(manifest.read_text(encoding="utf-8"))
    assert saved["command"] == "train" and saved["results"] == {"loss": 1.5}
    assert saved["seed"] == {"data": None, "train": cfg.train.seed}
    assert not list(run.path.glob(f".{MANIFEST_FILE}*"))  # replaced atomically, nothing left
    assert run.config() == cfg
    log = run.metrics_log()
    log.write({"step": 1, "loss": 2.0})
    log.write({"step": 2, "loss": 1.0})
    lines = run.metrics_file.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    text = "{{ messages }}\r\nend\n"  # byte for byte: a \r\n is kept
    assert run.write_template(text) == run.template_file and run.template_text() == text
    run.write_results({"train_loss": 0.5})
    assert json.loads(run.results_file.read_text(encoding="utf-8")) == {"train_loss": 0.5}
    run.prepared.write_summary({"rows": 3})
    assert (run.path / "prepared" / "summary.json").read_text() == '{\n  "rows": 3\n}\n'


def test_write_manifest_redacts_a_credential(tmp_path: Path, monkeypatch: Any) -> None:
    argv = ["instructune", "synthesize", "--base-url", "https://me:argvsecret@example.com/v1"]
    monkeypatch.setattr(sys, "argv", argv)
    run = RunDir(tmp_path)
    run.write_manifest(None, "synthesize", {"url": "https://user:hunter2secret@example.com/v1"})
    text = run.manifest_file.read_text(encoding="utf-8")
    assert "example.com" in text
    assert "hunter2secret" not in text and "argvsecret" not in text
    assert not run.config_file.exists()  # no config: none is written


def test_each_run_file_name_is_spelled_only_in_rundir() -> None:
    """A second spelling of a run-folder file name drifts apart from the first (issue 19)."""
    from instructune.rundir import names

    spelled = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    src = Path(names.__file__).parents[1]
    found = [
        f"{path.relative_to(src)}: {quote}{name}{quote}"
        for path in src.rglob("*.py")
        if path != Path(names.__file__)
        for name in spelled
        for quote in "\"'"
        if f"{quote}{name}{quote}" in path.read_text(encoding="utf-8")
    ]
    assert found == []


def test_train_refuses_a_users_folder_and_keeps_its_files(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The probe's case: output_dir holds the user's README.md and config.yaml (peft writes a
    README.md model card, and every run a config.yaml)."""
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "README.md").write_text("# my notes\n")
    (mine / "config.yaml").write_text("my: settings\n")
    before = _snapshot(mine)
    cfg = _train_config(tmp_path, tiny_model_dir, _data(tmp_path / "data"), mine)
    out = subprocess.run(
        [sys.executable, "-m", "instructune", "train", str(cfg), "--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert f"error: output_dir {str(mine)!r} is a folder instructune did not write" in out.stderr
    assert "README.md" in out.stderr
    assert _snapshot(mine) == before


def test_root_home_and_a_folder_holding_the_data_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data = _data(tmp_path / "work" / "data")
    # A model that does not exist: code that does not check output_dir fails on it before
    # writing anything (exit 1), so this test can never write into the real `/`.
    model = tmp_path / "no-such-model"
    cases = {
        "/": "is the filesystem root",
        str(home): "is your home folder",
        str(tmp_path / "work"): f"holds this run's input {str(data)!r}",
    }
    before = _snapshot(tmp_path)
    for out, why in cases.items():
        cfg = _train_config(tmp_path, model, data, out)
        before[str(cfg.relative_to(tmp_path))] = cfg.read_bytes()
        for command in (["train", str(cfg), "--overwrite"], ["prepare", str(cfg)]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: output_dir {out!r} {why}"), err
            assert len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_fresh_empty_and_own_folders_are_accepted(tmp_path: Path) -> None:
    claim_output_dir(tmp_path / "new" / "run", command="train")  # missing
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_dir(empty, command="train")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "README.md").write_text("peft's model card")
    (ours / "manifest.json").write_text(json.dumps({"command": "prepare", "versions": {}}))
    claim_output_dir(ours, command="train")
    (ours / "manifest.json").write_text("{}")  # a manifest.json that is not ours
    with pytest.raises(ConfigError, match="instructune did not write"):
        claim_output_dir(ours, command="train")


def test_prepare_then_train_then_rerun_in_one_folder(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    cfg = _train_config(tmp_path, tiny_model_dir, _data(tmp_path / "data"), tmp_path / "run")
    assert main(["prepare", str(cfg)]) == 0
    assert main(["train", str(cfg)]) == 0  # into prepare's folder: ours
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 2  # another run's results: --overwrite, as before
    assert "pass --overwrite to replace it" in capsys.readouterr().err


def _build_config(tmp_path: Path, source: Path, out: Path) -> Path:
    rows = [{"text": f"row {i} says {i * 7}", "label": "ab"[i % 2]} for i in range(20)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = {"prompt": "{{ text }}\n{{ options_ }}", "target": "{{ answer }}"}
    spec = {
        "build": {
            "sources": [
                {"name": "toy", "path": str(source), "templates": [template], "label": "label"}
            ],
            "eval_fraction": 0.2,
        },
        "output_dir": str(out),
    }
    cfg = tmp_path / "build.yaml"
    cfg.write_text(json.dumps(spec))  # JSON is YAML
    return cfg


def test_build_refuses_its_own_input_and_an_earlier_build(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cfg = _build_config(tmp_path, out / "train.jsonl", out)
    before = _snapshot(out)
    assert main(["build", str(cfg)]) == 2
    assert f"holds this run's input {str(out / 'train.jsonl')!r}" in capsys.readouterr().err
    assert _snapshot(out) == before

    cfg = _build_config(tmp_path, tmp_path / "rows.jsonl", out / "built")
    assert main(["build", str(cfg)]) == 0
    first = (out / "built" / "train.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["build", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier build (train.jsonl, eval.jsonl" in err and "--overwrite" in err
    assert main(["build", str(cfg), "--overwrite"]) == 0
    assert (out / "built" / "train.jsonl").read_bytes() == first  # same config, same rows


def test_generate_never_writes_over_its_input_or_an_old_output(
    tmp_path: Path, tiny_model_dir: Path, capsys: Any
) -> None:
    model = tmp_path / "model"  # a copy: code that writes over it can't harm other tests
    shutil.copytree(tiny_model_dir, model)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "there"}\n')
    before = _snapshot(tmp_path)
    run = ["generate", str(model), "--max-new-tokens", "2", "--input", str(prompts)]
    for argv in (
        [*run, "--output", str(prompts)],
        [*run, "--output", str(prompts), "--overwrite"],
        [*run, "--output", str(model / "config.json"), "--overwrite"],
    ):
        assert main(argv) == 1
        assert "is this command's input" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before

    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    assert main([*run, "--output", str(out)]) == 1
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "earlier results\n"
    assert main([*run, "--output", str(out), "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_export_never_replaces_a_parity_report(
    tiny_lora_run: Path, tmp_path: Path, capsys: Any
) -> None:
    report = tmp_path / "x.parity.json"
    report.write_text('{"mine": true}\n')
    assert main(["export", str(tiny_lora_run), "--out", str(tmp_path / "x.gguf")]) == 1
    assert f"{report} exists; choose a new file name" in capsys.readouterr().err
    assert report.read_text() == '{"mine": true}\n'
    assert not (tmp_path / "x.gguf").exists()


def test_eval_refuses_a_users_folder_and_its_own_adapter_run(tmp_path: Path, capsys: Any) -> None:
    data = _data(tmp_path / "data")
    users = tmp_path / "mine"
    users.mkdir()
    (users / "config.yaml").write_text("my own notes\n")
    run = tmp_path / "runs" / "lora"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"command": "train", "versions": {}}))
    before = _snapshot(tmp_path)
    # A model that does not exist: code that does not claim output_dir fails on it before writing.
    model = tmp_path / "no-such-model"
    for out, adapter, why in [
        (users, None, "is a folder instructune did not write"),
        (run, run, f"holds this run's input {str(run)!r}"),
    ]:
        cfg = tmp_path / "eval.yaml"
        task = {"name": "t", "path": str(data), "type": "loss"}
        body: dict[str, Any] = {"model": {"path": str(model)}, "eval": {"tasks": [task]}}
        body |= {"output_dir": str(out)} | ({"adapter": str(adapter)} if adapter else {})
        cfg.write_text(json.dumps(body))
        before[str(cfg.relative_to(tmp_path))] = cfg.read_bytes()
        assert main(["eval", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: output_dir {str(out)!r} {why}"), err
    assert _snapshot(tmp_path) == before
