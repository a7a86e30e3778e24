"""Intra-op threads that follow how much of the CPU is really ours.

torch's OpenMP threads meet at a barrier after every parallel op. When another CPU-bound process
takes one of the cores, each barrier waits for the descheduled thread's next time slice, thousands
of times a step: on 2 cores a training step went from 3.4 s to 24 s (7x) beside one busy process,
while one thread ran it in 5.8 s (docs/performance.md). So the thread count is chosen from a
measurement: the CPU time other processes used (`/proc/stat` minus `/proc/self/stat`) over a short
window at start-up, then over every optimizer step, with hysteresis. `train.num_threads` fixes the
count and turns this off. Where `/proc` is missing (macOS, Windows) torch's default stays.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_CORE = 0.5
"""Other processes' load (in cores) from which a core counts as taken."""
FREE_CORE = 0.25
"""Load under which a taken core counts as free again."""


@dataclass
class CpuSample:
    at: float
    busy: float
    """Seconds all cores spent busy since boot (/proc/stat)."""
    ours: float
    """Seconds this process, its live descendants and the children it has waited for spent on
    a CPU (/proc/PID/stat utime + stime + cutime + cstime)."""


def sample() -> CpuSample | None:
    """The CPU counters now; None where /proc cannot be read."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ours = _cpu_ticks("self")
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    values = [int(v) for v in fields[:8]]
    busy = sum(values) - values[3] - values[4]
    # Our own child processes (inductor's compile workers) are our work, not competition.
    ours += sum(_cpu_ticks(pid) for pid in _descendants("self"))
    return CpuSample(time.monotonic(), busy / _TICKS, ours / _TICKS)


def _cpu_ticks(pid: str) -> int:
    """utime + stime of a process and of its children it has waited for (fields 14-17 of
    proc(5)); 0 once it has exited.

    The waited-for children matter: inductor's compile workers run short-lived compiler
    processes, which exit between two samples; without cutime/cstime their CPU time left "ours"
    but stayed in /proc/stat's busy time, and a cold compile read as 0.8 cores of competition."""
    try:
        own = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if pid == "self":
            raise
        return 0
    return int(own[11]) + int(own[12]) + int(own[13]) + int(own[14])


def _descendants(pid: str, depth: int = 4) -> list[str]:
    """Live child processes, recursively, from /proc/PID/task/*/children (empty where the
    kernel does not provide it)."""
    found: list[str] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += children.read_text().split()
        except OSError:
            continue
    if depth > 1:
        found += [
            grandchild for child in list(found) for grandchild in _descendants(child, depth - 1)
        ]
    return found


def others_load(start: CpuSample, end: CpuSample) -> float:
    """Cores that other processes kept busy between two samples."""
    elapsed = end.at - start.at
    if elapsed <= 0:
        return 0.0
    return max(0.0, ((end.busy - start.busy) - (end.ours - start.ours)) / elapsed)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def threads_for(load: float, cores: int, current: int | None = None) -> int:
    """Threads to use beside `load` cores of other work: one per core left free.

    A core counts as taken from BUSY_CORE of load on, and as free again only under FREE_CORE
    when it was taken (`current` < cores), so a load near the threshold does not flap.
    """
    taken = math.floor(load + (1 - BUSY_CORE))
    if current is not None and current < cores:
        taken = max(taken, math.floor(load + (1 - FREE_CORE)))
    return max(1, min(cores, cores - taken))


def choose_threads(window_s: float = 0.3) -> tuple[int, float] | None:
    """(threads, others' load) measured over `window_s` now, or None without /proc."""
    first = sample()
    if first is None:
        return None
    time.sleep(window_s)
    second = sample()
    if second is None:
        return None
    load = others_load(first, second)
    return threads_for(load, usable_cores()), load


class ThreadGovernor(TrainerCallback):
    """Re-chooses the thread count after every optimizer step from that step's measured load."""

    def __init__(self, threads: int) -> None:
        self.cores = usable_cores()
        self.threads = threads
        self.changes: list[dict[str, Any]] = []
        self._last = sample()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        import torch

        now = sample()
        if now is None or self._last is None:
            return
        load, self._last = others_load(self._last, now), now
        wanted = threads_for(load, self.cores, self.threads)
        if wanted != self.threads:
            logger.info(
                "other processes use %.1f of %d cores: %d -> %d torch threads",
                load, self.cores, self.threads, wanted,
            )  # fmt: skip
            change = {"step": state.global_step, "load": round(load, 2), "threads": wanted}
            self.changes.append(change)
            torch.set_num_threads(wanted)
            self.threads = wanted


def thread_policy(num_threads: int | None) -> ThreadGovernor | None:
    """Apply `train.num_threads` when set; else measure now, set, and govern the run."""
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
        return None
    chosen = choose_threads()
    if chosen is None:
        return None
    threads, load = chosen
    if threads != torch.get_num_threads():
        logger.info("other processes use %.1f cores at start: %d torch threads", load, threads)
    torch.set_num_threads(threads)
    return ThreadGovernor(threads)
