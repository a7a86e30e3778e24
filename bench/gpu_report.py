"""bench/gpu.py's reporting: the machine, MFU against the GPU's peak, the table, the carry plan."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device name; first match wins, so the
# more specific names come first. An unlisted device reports MFU as unknown.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]
PACKAGES = (
    "torch", "transformers", "peft", "trl", "accelerate", "datasets", "liger_kernel",
    "flash_attn", "bitsandbytes", "instructune",
)  # fmt: skip
# What a bare GPU machine with its own torch needs to run bench/gpu.py (and TRL beside it).
CARRY_ROOTS = ("instructune", "trl", "datasets", "liger-kernel")
LIGER_PIN = "liger-kernel==0.8.5"  # pyproject.toml's `gpu` extra (a test keeps them equal)
NOT_CARRIED = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|setuptools|pip|wheel)$")


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def _version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "device": "cpu",
        "gpu_memory_bytes": None,
        "peak_bf16_tflops": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "device": props.name,
            "gpu_memory_bytes": int(props.total_memory),
            "peak_bf16_tflops": peak_tflops(props.name),
        }
    env["bitsandbytes"] = env["versions"]["bitsandbytes"] is not None
    return env


def describe_environment(env: dict[str, Any]) -> str:
    peak = env["peak_bf16_tflops"]
    memory = env["gpu_memory_bytes"]
    lines = [
        f"device: {env['device']}"
        + (f", {memory / 2**30:.0f} GiB" if memory else "")
        + f", bf16 dense peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}",
        f"python {env['python']}, CUDA {env['cuda']}",
        "versions: " + ", ".join(f"{k} {v or '-'}" for k, v in env["versions"].items()),
    ]
    return "\n".join(lines)


def utilization(result: dict[str, Any], flops: float, env: dict[str, Any]) -> dict[str, Any]:
    """Achieved TFLOP/s (model FLOPs per token x steady tokens/s) and its share of the peak."""
    if "tokens_per_s" not in result:
        return {}
    achieved = result["tokens_per_s"] * flops / 1e12
    peak = env["peak_bf16_tflops"]
    return {
        "flops_per_token": flops,
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else None,
    }


def _vs_trl(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["shape"], r["method"]): r for r in runs if r["side"] == "trl" and "tokens_per_s" in r
    }


def _cells(run: dict[str, Any], trl: dict[str, Any] | None) -> list[str]:
    if "skipped" in run or "error" in run:
        note = run.get("skipped") or f"error: {run['error']}"
        return [run["shape"], run["method"], run["side"], *[""] * 8, note]
    mfu = run.get("mfu")
    faster = trl is not None and run is not trl
    return [
        run["shape"],
        run["method"],
        run["side"],
        "yes" if run["checkpointing"] else "no",
        f"{run['tokens_per_s']:,.0f}",
        f"{run['tokens_per_s'] / trl['tokens_per_s']:.2f}" if faster and trl else "",
        "unknown" if mfu is None else f"{mfu:.1%}",
        f"{run['peak_gb']:.1f}",
        f"{run['peak_gb'] / trl['peak_gb']:.2f}" if faster and trl else "",
        "" if run["last_loss"] is None else f"{run['last_loss']:.4f}",
        f"{run['heldout_loss']:.4f}",
        _kernels(run.get("kernels")),
    ]


def _kernels(kernels: dict[str, Any] | None) -> str:
    if not kernels:
        return ""
    return ", ".join(f"{k}={v}" for k, v in kernels.items() if k not in ("setting", "device"))


HEADER = [
    "shape", "method", "side", "ckpt", "tokens/s", "×TRL", "MFU", "peak GB", "mem ×TRL",
    "last loss", "held-out loss", "kernels / note",
]  # fmt: skip


def markdown(out: dict[str, Any]) -> str:
    env, settings = out["environment"], out["settings"]
    trl = _vs_trl(out["runs"])
    rows = [HEADER, ["---"] * len(HEADER)]
    rows += [_cells(r, trl.get((r["shape"], r["method"]))) for r in out["runs"]]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return (
        f"{describe_environment(env)}\n"
        f"settings: {json.dumps(settings)}\n"
        "MFU counts 4 (adapters) or 6 (full) x the linear layers' and LM head's parameters "
        "per token, attention scores excluded; peak memory is torch's max allocated (peak RSS "
        "on CPU).\n\n" + table + "\n"
    )


def one_line(run: dict[str, Any]) -> str:
    head = f"{run['shape']:<14}{run['method']:<6}{run['side']:<5}"
    if "tokens_per_s" not in run:
        return head + (run.get("skipped") or f"error: {run.get('error')}")
    mfu = run.get("mfu")
    return (
        head
        + f"{run['tokens_per_s']:>10,.0f} tok/s  MFU {'unknown' if mfu is None else f'{mfu:.1%}'}"
        f"  peak {run['peak_gb']:.1f} GB  held-out loss {run['heldout_loss']:.4f}"
    )


def write(folder: Path, out: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (folder / "results.md").write_text(markdown(out), encoding="utf-8")
    print(f"wrote {folder / 'results.json'} and {folder / 'results.md'}")


def carry_pins() -> list[str]:
    """`name==version` of every installed distribution the carry roots need, recursively, minus
    what the GPU machine brings itself (torch, Triton, CUDA libraries)."""
    seen: dict[str, str] = {}
    todo = list(CARRY_ROOTS)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen or NOT_CARRIED.match(key):
            continue
        try:
            dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            seen[key] = "(not installed here)"
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)  # markers: no extras, and this (Linux) machine's platform
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    pins = {k: f"{k}=={v}" for k, v in seen.items() if not v.startswith("(")}
    return sorted(({"liger-kernel": LIGER_PIN} | pins).values())


def print_carry_plan() -> None:
    pins = [p for p in carry_pins() if not p.startswith("instructune==")]
    print("# 1. on the device, see what it already has:")
    print('#    run(command="python -V; pip list 2>/dev/null | head -200; nvidia-smi -L")')
    print("# 2. here, fetch wheels for what it lacks (trim this list by step 1), <= 64 MiB:")
    print("pip download --no-deps -d .gpu-wheels \\\n    " + " \\\n    ".join(pins))
    print("# 3. run it (instructune itself travels as the working tree):")
    print(
        '#    run(command="pip install --no-deps .gpu-wheels/*.whl && pip install --no-deps -e . '
        '&& python bench/gpu.py --out $OUT", carry=[".gpu-wheels"], timeout_s=600)'
    )
