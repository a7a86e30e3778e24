"""A real studio folder (tiny model: `prepare --dump`, a 2-step LoRA `train`, an `eval`), the
studio served from it on a free port, and headless Chromium driven by Selenium.

Chromium is a system package (`make test` installs it where it can): without it the browser
tests skip locally but fail under CI=true, like `tests/evaluation/test_report_browser.py`, whose
flags these are.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT_ROW = '<script>alert("x")</script> & <b>bold</b>?'


@dataclass
class Built:
    root: Path
    run: str
    eval: str
    config: str
    """A config for a 1-step train into `runs/launched` (for the Launch page)."""
    long_config: str
    """A config for a train too long to finish: the Launch page's Stop ends it."""


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."}
        for i in range(10)
    ]
    rows.append({"instruction": SCRIPT_ROW, "input": "", "output": "It is text."})
    long_input = " ".join(f"word{i}" for i in range(60))
    rows.append({"instruction": "Summarise:", "input": long_input, "output": "Words."})
    rows.append({"instruction": "No output here", "input": ""})  # dropped (on_error: skip)
    return rows


def _train_yaml(model: Path, data: Path, out: str, steps: int) -> str:
    return (
        f"model: {{path: {model}}}\n"
        f"data:\n  train: [{{path: {data}, format: alpaca}}]\n  max_length: 64\n"
        "  truncation: truncate_prompt\n  on_error: skip\n  packing: true\n"
        "method: lora\nlora: {r: 4, alpha: 8, dropout: 0.0}\n"
        f"train: {{max_steps: {steps}, micro_batch_size: 4, learning_rate: 0.05,\n"
        "  logging_steps: 1}\n"
        f"output_dir: {out}\n"
    )


@pytest.fixture(scope="session")
def built(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    from instructune.config import load_config
    from instructune.data.prepare import run_prepare
    from instructune.evaluation.run import run_eval
    from instructune.training.run import run_train

    root = tmp_path_factory.mktemp("studio")
    data = root / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    configs = root / "configs"
    configs.mkdir()
    (configs / "lora.yaml").write_text(_train_yaml(tiny_model_dir, data, "runs/lora", 2))
    (configs / "launch.yaml").write_text(_train_yaml(tiny_model_dir, data, "runs/launched", 1))
    long = _train_yaml(tiny_model_dir, data, "runs/stopped", 100_000)
    (configs / "long.yaml").write_text(long.replace("logging_steps: 1", "logging_steps: 5"))
    cwd = Path.cwd()
    os.chdir(root)  # output_dir in the configs is relative to DIR, as a user writes it
    try:
        cfg = load_config(configs / "lora.yaml")
        run_prepare(cfg, dump=True)
        run_train(cfg)
        tasks = root / "data" / "cls.jsonl"
        tasks.write_text(
            "".join(
                json.dumps({"instruction": f"Is {i} odd? {SCRIPT_ROW}", "output": str(i % 2 == 1)})
                + "\n"
                for i in range(6)
            )
        )
        (configs / "eval.yaml").write_text(
            f"model: {{path: {tiny_model_dir}}}\nadapter: runs/lora\n"
            "eval:\n  bootstrap_resamples: 50\n  tasks:\n"
            f"    - {{name: odd, path: {tasks}, type: classification, "
            "options: ['True', 'False']}\n"
            "output_dir: evals/lora\n"
        )
        run_eval(load_config(configs / "eval.yaml"))
    finally:
        os.chdir(cwd)
    return Built(root, "runs/lora", "evals/lora", "configs/launch.yaml", "configs/long.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    studio: Any
    built: Built


@pytest.fixture(scope="module")
def served(built: Built) -> Iterator[Served]:
    """The studio over `built.root` on 127.0.0.1, in a thread, stopped after the module."""
    import uvicorn

    from instructune.studio.app import Studio, create_app
    from instructune.studio.workspace import Workspace

    studio = Studio(Workspace(built.root))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(studio), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the studio did not start")
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", studio, built)
    server.should_exit = True
    thread.join(timeout=60)
