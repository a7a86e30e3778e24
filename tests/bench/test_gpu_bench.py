"""bench/gpu.py: the whole script end to end on CPU (`--tiny`, ours and TRL), and the pure parts
that decide what a GPU run does: the shapes, the memory plan, the peak table, the carry plan."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alpaca" / "alpaca_gpt4_1k.json"
sys.path.insert(0, str(BENCH))  # the bench scripts import each other as top-level modules

import gpu  # noqa: E402
import gpu_report  # noqa: E402

GIB = 2**30


def _data() -> Path:
    for path in (DATA, *gpu.DATA_CANDIDATES, Path("/work/shared") / gpu.DATA_NAME):
        if path.is_file():
            return path
    pytest.fail(f"alpaca_gpt4_1k.json not found next to the checkout ({DATA})")


def test_tiny_run_end_to_end_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = str(BENCH.parent / "src")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "INSTRUCTUNE_BENCH_DIR": str(tmp_path / "work"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, str(BENCH / "gpu.py"), "--tiny", "--methods", "lora", "--steps", "2"]
    cmd += ["--data", str(_data()), "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "device: cpu" in done.stdout and "transformers 5.23.0" in done.stdout

    result = json.loads((out / "results.json").read_text())
    assert result["environment"]["device"] == "cpu"
    assert result["settings"]["seq_len"] == 256 and result["settings"]["steps"] == 2
    runs = {r["side"]: r for r in result["runs"]}
    assert runs.keys() == {"ours", "trl"}
    for run in runs.values():
        assert (run["shape"], run["method"], run["steps"]) == ("tiny", "lora", 2)
        assert run["tokens_per_s"] > 0 and run["peak_gb"] > 0 and run["tokens"] > 0
        assert run["mfu"] is None  # no bf16 peak known for a CPU
        assert math.isfinite(run["heldout_loss"]) and math.isfinite(run["last_loss"])
        assert run["achieved_tflops"] == pytest.approx(
            run["tokens_per_s"] * run["flops_per_token"] / 1e12
        )
    # same data, steps, learning rate, adapters: the held-out losses after 2 steps agree
    assert runs["ours"]["heldout_loss"] == pytest.approx(runs["trl"]["heldout_loss"], abs=0.02)
    assert runs["ours"]["kernels"]["loss"] == "chunked"  # CPU: our loss

    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| shape"))
    for column in ("tokens/s", "×TRL", "MFU", "peak GB", "mem ×TRL", "held-out loss"):
        assert f" {column} " in header
    ours_row = next(line for line in table.splitlines() if line.startswith("| tiny | lora | ours"))
    cells = [c.strip() for c in ours_row.strip("|").split("|")]
    assert cells[6] == "unknown" and float(cells[5]) > 0  # MFU; ours/TRL tokens/s ratio


def test_shapes_have_the_published_parameter_counts() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    want = {"qwen2.5-0.5b": 0.494e9, "llama-3.2-1b": 1.236e9, "llama-3.1-8b": 8.030e9}
    for shape, params in want.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(gpu.model_config(shape))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=1e-3)


def test_memory_plan_on_an_80gb_and_a_141gb_gpu() -> None:
    tokens = 2048 * 4
    h100, h200 = 80 * GIB, 141 * GIB
    assert gpu.plan_run("llama-3.2-1b", "lora", tokens, h100)["checkpointing"] is False
    full_8b = gpu.plan_run("llama-3.1-8b", "full", tokens, h100)
    assert full_8b["skip"] is not None and "GB" in full_8b["skip"]  # 8B x 12 bytes > 80 GB
    on_h200 = gpu.plan_run("llama-3.1-8b", "full", tokens, h200)
    assert on_h200["skip"] is None and on_h200["checkpointing"] is True
    qlora = gpu.plan_run("llama-3.1-8b", "qlora", tokens, h100)
    assert qlora["skip"] is None and qlora["estimated_gb"] < 80
    assert gpu.plan_run("tiny", "full", 512, None) == {
        "estimated_gb": 0.0,
        "checkpointing": False,
        "skip": None,
    }


def test_flops_per_token_counts_linear_layers_and_head() -> None:
    # Llama-3.2-1B: 16 x (2048 x 2048 x 2 + 2048 x 512 x 2 + 3 x 2048 x 8192) + 2048 x 128256
    linear = 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192) + 2048 * 128256
    assert gpu.matmul_params("llama-3.2-1b") == linear
    assert gpu.flops_per_token("llama-3.2-1b", "lora") == 4 * linear
    assert gpu.flops_per_token("llama-3.2-1b", "full") == 6 * linear


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("Tesla T4", None),
    ],
)
def test_peak_table(name: str, peak: float | None) -> None:
    assert gpu_report.peak_tflops(name) == peak


def test_carry_plan_pins_what_the_device_lacks_but_not_torch() -> None:
    pins = gpu_report.carry_pins()
    names = {p.split("==")[0] for p in pins}
    assert {"transformers", "peft", "trl", "accelerate"} <= names
    assert not any(n == "torch" or n.startswith("nvidia-") or n == "triton" for n in names)
    assert "transformers==5.23.0" in pins
    assert "colorama" not in names  # Windows-only requirements are left out


def test_carry_plan_liger_pin_is_the_gpu_extra() -> None:
    import tomllib

    pyproject = tomllib.loads((BENCH.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["optional-dependencies"]["gpu"] == [gpu_report.LIGER_PIN]
    assert gpu_report.LIGER_PIN in gpu_report.carry_pins()  # not installed here, carried anyway
