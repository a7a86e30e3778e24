"""`train.report_to: wandb` (offline) and `mlflow` (local file store), for real: the run's logged
losses appear in the tracker's own files, step for step as in metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from instructune.training.plots import read_metrics


def _train(cfg: Any, tmp_path: Path) -> dict[int, float]:
    """Run `instructune train` in a subprocess (the trackers' whole lifecycle); step → loss."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "instructune", "train", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(cfg.output_path / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_mlflow_local_file_store(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(train={"max_steps": 3, "report_to": ["mlflow"]})
    losses = _train(cfg, tmp_path)
    (run,) = [p for p in (cfg.output_path / "mlruns" / "0").iterdir() if p.is_dir()]
    logged = {}
    for line in (run / "metrics" / "loss").read_text().splitlines():
        _, value, step = line.split()
        logged[int(step)] = float(value)
    assert logged.keys() == losses.keys() == {1, 2, 3}
    for step, loss in losses.items():
        assert logged[step] == pytest.approx(loss, rel=1e-6)
    assert (run / "params" / "learning_rate").read_text() == "0.01"


def test_wandb_offline(make_config: Any, tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2

    cfg = make_config(train={"max_steps": 3, "report_to": ["wandb"]})
    losses = _train(cfg, tmp_path)
    (log,) = (cfg.output_path / "wandb").glob("offline-run-*/run-*.wandb")
    logged = {}
    for data in _wandb_records(log.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            if "train/loss" in items:
                logged[int(items["train/global_step"])] = float(items["train/loss"])
    assert logged.keys() == losses.keys() == {1, 2, 3}
    for step, loss in losses.items():
        assert logged[step] == pytest.approx(loss, rel=1e-6)


def _wandb_records(data: bytes) -> Iterator[bytes]:
    """The records of a `.wandb` file: a 7-byte header, then a LevelDB-style log of 32 KiB
    blocks, each record `crc32(4) length(2, LE) type(1) payload`, split across blocks as
    FIRST/MIDDLE/LAST pieces (types 2/3/4; 1 is a whole record)."""
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind, payload = data[pos + 6], data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
        elif kind == 0 and length == 0:  # zero padding to the block's end
            pos += block - pos % block
