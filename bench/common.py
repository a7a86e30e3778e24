"""What the benchmark scripts share: each side runs in a process of its own, measured alike."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(
    script: str, args: Sequence[str], label: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run `script args` offline in a fresh interpreter; its last stdout line is its JSON result.

    A fresh process per side keeps one side's imports, caches and peak memory out of the other's.
    """
    cmd = [sys.executable, script, *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_timer() -> Any:
    """A TrainerCallback recording each optimizer step's seconds in its `.steps` list."""
    import time

    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.steps.append(time.perf_counter() - self._start)

    return StepTimes()


def steady_seconds(steps: int, seconds: float, first: float) -> tuple[int, float]:
    """(steps, seconds) after the first step, which carries one-time costs (compilation, warm-up)
    and is reported on its own; a one-step run keeps its only step."""
    return (steps - 1, seconds - first) if steps > 1 else (steps, seconds)
