"""Two CPU processes (DDP over gloo, launched by torchrun) follow the loss curve of one process
that sees the same global batch: sharding, gradient all-reduce and the cross-process token
normalization all have to be right for the curves to agree."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from instructune.training.plots import read_metrics

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], cfg: Any, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / f"{cfg.output_path.name}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [*command, "-m", "instructune", "train", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [r for r in read_metrics(cfg.output_path / "metrics.jsonl") if "loss" in r]


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun not installed")
def test_two_process_ddp_matches_one_process(make_config: Any, tmp_path: Path) -> None:
    train = {"max_steps": 4, "gradient_accumulation_steps": 2, "lr_scheduler": "constant"}
    one = make_config(train=train | {"micro_batch_size": 2}, out="one")
    # checkpoints too: both ranks write into the staging folder, the main one publishes it
    two = make_config(train=train | {"micro_batch_size": 1, "save_steps": 2}, out="two")

    single = _run([sys.executable], one, tmp_path)
    ddp = _run(
        [str(TORCHRUN), "--nproc_per_node", "2", f"--master_port={_free_port()}"], two, tmp_path
    )

    assert [r["step"] for r in ddp] == [1, 2, 3, 4]
    for a, b in zip(single, ddp, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["trained_tokens"] == a["trained_tokens"]  # counted over both processes
    assert ddp[-1]["loss"] < ddp[0]["loss"]  # it trained, with the synchronized gradients
    results = json.loads((two.output_path / "train_results.json").read_text())
    assert results["global_step"] == 4
    checkpoints = two.output_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for rank in (0, 1):  # every rank's RNG state made it in before the folder was published
        assert (checkpoints / "checkpoint-4" / f"rng_state_{rank}.pth").is_file()


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun not installed")
def test_two_process_dpo_logs_metrics_over_every_pair(make_config: Any, tmp_path: Path) -> None:
    """DPO's logged log-probs and preference accuracy are means over the step's pairs on both
    processes: they equal those of one process that sees the same global batch (4 pairs a step;
    one process's 2 pairs could not give an accuracy of 0.25, nor the same mean log-probs, since
    the chosen answers alternate between a long and a short one)."""
    rows = [
        {
            "prompt": f"Is {i} even?",
            "chosen": "Yes, it is." if i % 2 == 0 else "No.",
            "rejected": "No." if i % 2 == 0 else "Yes, it is even.",
        }
        for i in range(16)
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = {"train": [{"path": str(pairs), "format": "preference"}], "packing": False}
    train = {"objective": "dpo", "max_steps": 3, "gradient_accumulation_steps": 2}
    one = make_config(train=train | {"micro_batch_size": 2}, data=data, out="dpo-one")
    two = make_config(train=train | {"micro_batch_size": 1}, data=data, out="dpo-two")

    single = _run([sys.executable], one, tmp_path)
    ddp = _run(
        [str(TORCHRUN), "--nproc_per_node", "2", f"--master_port={_free_port()}"], two, tmp_path
    )

    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(single, ddp, strict=True):
        for key in ("logps/chosen", "logps/rejected"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
        assert b["rewards/accuracies"] == a["rewards/accuracies"]
        # rewards are differences of log-probs after the update, which DDP's float noise moves
        # by a few percent at these tiny sizes (the losses agree to 2e-4)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert b[key] == pytest.approx(a[key], rel=0.2, abs=1e-6), key
    assert {r["rewards/accuracies"] for r in single} >= {0.25}
