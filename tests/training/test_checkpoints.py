"""Checkpoints are complete or invisible; resume refuses a changed run; output_dir is claimed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from instructune.config import ConfigError
from instructune.data.prepare import run_prepare
from instructune.rundir import COUNTS_FILE, RUN_INFO_FILE, STAGING_DIR
from instructune.training.run import run_train

CHECKPOINT_FILES = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    COUNTS_FILE,
    RUN_INFO_FILE,
)


def _write_config(cfg: Any, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("INSTRUCTUNE_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "instructune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _complete_checkpoints(checkpoints: Path) -> list[int]:
    """Steps of the visible checkpoints, after asserting each is complete."""
    steps = []
    for folder in sorted(checkpoints.glob("checkpoint-*")):
        missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
        assert not missing, f"{folder.name} is visible but lacks {missing}"
        json.loads((folder / "trainer_state.json").read_text())  # whole, not cut
        load_file(folder / "adapter_model.safetensors")
        steps.append(int(folder.name.rsplit("-", 1)[1]))
    return sorted(steps)


def _staged(staging: Path) -> set[str]:
    """Names in the staging folder now; the trainer removes the folder after each save, so it can
    vanish between any check and the listing."""
    try:
        return set(os.listdir(staging))
    except FileNotFoundError:
        return set()


def _kill_during_next_save(
    proc: subprocess.Popen[str], staging: Path, after: int, delay: float
) -> bool:
    """SIGKILL `proc` `delay` s after it starts staging a checkpoint past step `after`; whether
    the save was still being written when it died."""
    stale = _staged(staging)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        names = _staged(staging)
        if stale:  # what the last kill left: the new process removes it at startup
            stale &= names
            time.sleep(0.01)
            continue
        if any(int(n.rsplit("-", 1)[1]) > after for n in names if n.startswith("checkpoint-")):
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.0005)
    else:
        pytest.fail("no checkpoint was staged in time")
    time.sleep(delay)
    proc.kill()
    proc.communicate()
    return bool(_staged(staging))  # the process is dead: nothing removes the folder now


def test_kill_at_many_points_of_a_save_then_resume(make_config: Any, tmp_path: Path) -> None:
    # threads fixed: the thread policy follows the machine's load, and a resumed segment run at
    # another thread count than the uninterrupted run differs in the last bits (see README)
    # 24 steps: the 0.4 s kill lands 6-8 steps past the last checkpoint here, and a faster machine
    # must not finish the run before the last kill
    train = {"max_steps": 24, "save_steps": 1, "save_total_limit": 2, "num_threads": 2}
    full = run_train(make_config(train=train, out="full"))
    cfg = make_config(train=train, out="killed")
    path = str(_write_config(cfg, tmp_path / "killed.yaml"))
    checkpoints = cfg.output_path / "checkpoints"
    staging = checkpoints / STAGING_DIR
    torn = 0
    last = 1  # the first kill waits for checkpoint-2, so checkpoint-1 is complete
    for i, delay in enumerate([0.0, 0.002, 0.01, 0.03, 0.1, 0.4]):
        proc = _cli(["train", path] + (["--resume"] if i else []))
        torn += _kill_during_next_save(proc, staging, last, delay)
        steps = _complete_checkpoints(checkpoints)
        assert steps, "a complete checkpoint must be left to resume from"
        last = max(steps)
    assert torn >= 1  # at least one kill landed inside a save (most do)
    proc = _cli(["train", path, "--resume"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert not staging.exists()
    expected = load_file(full.out_dir / "adapter_model.safetensors")
    got = load_file(cfg.output_path / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    segments = json.loads((cfg.output_path / "manifest.json").read_text())["segments"]
    starts = [s["start_step"] for s in segments]
    assert segments[0]["resumed_from"] is None and starts == sorted(set(starts))
    assert segments[-1]["resumed_from"] == f"checkpoint-{last}"


def test_resume_refuses_a_changed_run_and_records_more_steps(
    make_config: Any, tmp_path: Path
) -> None:
    train = {"max_steps": 4, "save_steps": 2}
    run_train(make_config(train=train))
    other = tmp_path / "other.jsonl"
    shutil.copy(make_config().data.train[0].path, other)  # type: ignore[union-attr]
    changed = make_config(
        train=train | {"learning_rate": 0.02, "max_steps": 6},
        data={"train": [{"path": str(other)}]},
    )
    with pytest.raises(ConfigError) as info:
        run_train(changed, resume=True)
    message = str(info.value)
    assert "train.learning_rate: 0.01 → 0.02" in message and "data.train" in message
    assert "max_steps" not in message  # more steps is a change resuming can honour

    longer = run_train(make_config(train=train | {"max_steps": 6}), resume=True)
    assert longer.metrics["global_step"] == 6
    manifest = json.loads((longer.out_dir / "manifest.json").read_text())
    assert [s["start_step"] for s in manifest["segments"]] == [0, 4]
    assert manifest["segments"][1]["resumed_from"] == "checkpoint-4"
    assert manifest["segments"][1]["changes"] == ["train.max_steps: 4 → 6"]


def test_resume_refuses_changed_data(make_config: Any, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    shutil.copy(make_config().data.train[0].path, data)  # type: ignore[union-attr]
    cfg = make_config(
        train={"max_steps": 2, "save_steps": 2}, data={"train": [{"path": str(data)}]}
    )
    run_train(cfg)
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[:-1]) + "\n")  # same path, one row less
    with pytest.raises(ConfigError, match="prepared data differ from what checkpoint-2"):
        run_train(
            cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 4})}),
            resume=True,
        )


def test_a_finished_run_is_not_overwritten_silently(make_config: Any) -> None:
    cfg = make_config(train={"max_steps": 1})
    run_prepare(cfg)  # prepare's outputs are no training run: train may follow
    first = run_train(cfg)
    weights = (first.out_dir / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"holds another training run.*--overwrite"):
        run_train(cfg)
    assert (first.out_dir / "adapter_model.safetensors").read_bytes() == weights
    again = run_train(cfg.model_copy(update={"method": "full"}), overwrite=True)
    assert not (again.out_dir / "adapter_config.json").exists()  # the old run's files are gone
    assert (again.out_dir / "model.safetensors").is_file()


def test_ctrl_c_saves_a_checkpoint_and_exits_130(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(train={"max_steps": 30})  # no save_steps: the interrupt saves anyway
    path = str(_write_config(cfg, tmp_path / "cfg.yaml"))
    metrics = cfg.output_path / "metrics.jsonl"
    proc = _cli(["train", path])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count('"loss"') >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    (step,) = _complete_checkpoints(cfg.output_path / "checkpoints")
    assert 2 <= step < 30
    assert (
        f"interrupted at step {step}" in err and f"checkpoint-{step}" in err and "--resume" in err
    )
    proc = _cli(["train", path, "--resume"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads((cfg.output_path / "train_results.json").read_text())
    assert result["global_step"] == 30


def test_rotation_never_leaves_a_half_deleted_checkpoint_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while deleting an old checkpoint (rotation) must not leave that folder
    visible and incomplete: `--resume` would pick it. Simulated by a delete that dies after
    removing one file."""
    from instructune.training import checkpoints as ckpt

    for step in (1, 2, 3):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in CHECKPOINT_FILES:
            (folder / name).write_text("x")
    real_rmtree = shutil.rmtree

    def dies_half_way(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name.startswith("retired-") and Path(path).is_dir():
            next(Path(path).iterdir()).unlink()
            raise KeyboardInterrupt  # the kill, mid-delete
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.rotate(tmp_path, limit=2, best=None)
    visible = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert visible == ["checkpoint-2", "checkpoint-3"]
    for name in visible:
        assert all((tmp_path / name / f).is_file() for f in CHECKPOINT_FILES)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    ckpt.clear_incomplete(tmp_path)  # the next run removes what the kill left
    assert not (tmp_path / STAGING_DIR).exists()
