"""Intra-op threads that follow how much of the CPU is really ours.

torch's OpenMP threads meet at a barrier after every parallel op. When another CPU-bound process
takes one of the cores, each barrier waits for the descheduled thread's next time slice, thousands
of times a step: on 2 cores a training step went from 3.4 s to 24 s (7x) beside one busy process,
while one thread ran it in 5.8 s (docs/performance.md). So the thread count is chosen from a
measurement: the CPU time other processes used (`/proc/stat` minus `/proc/self/stat`) over a short
window at start-up, then over every optimizer step, with hysteresis. `train.num_threads` fixes the
count and turns this off. Where `/proc` is missing (macOS, Windows) torch's default stays.

Other processes count by their scheduling priority: under CFS a nice-19 process gets 15/1024 of a
contended core beside a nice-0 one, so a niced batch job that takes a core only while we leave it
idle is not competition (counted fully, we dropped to 1 thread, it took the freed core, and we
never went back to 2). Per-process CPU time and nice values (/proc/PID/stat) are read only while
/proc/stat's `nice` column shows niced processes running: otherwise a sample costs two small reads.
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
_CFS_WEIGHTS = (
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
)  # fmt: skip
"""The kernel's CPU shares by nice value, -20 to 19 (sched_prio_to_weight in kernel/sched)."""


@dataclass
class CpuSample:
    at: float
    busy: float
    """Seconds all cores spent busy since boot (/proc/stat)."""
    ours: float
    """Seconds this process, its live descendants and the children it has waited for spent on
    a CPU (/proc/PID/stat utime + stime + cutime + cstime)."""
    nice: float = 0.0
    """Seconds all cores spent running niced (nice > 0) user code since boot (/proc/stat)."""
    niced: dict[str, tuple[float, float]] | None = None
    """Other processes of a lower priority than ours: pid -> (seconds on a CPU, their CFS weight
    relative to ours); None when not read (no niced work ran since the previous sample)."""


def sample(previous: CpuSample | None = None) -> CpuSample | None:
    """The CPU counters now; None where /proc cannot be read. Lower-priority processes are read
    only when niced work ran since `previous` (idle niced kernel threads cost nothing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ours = _cpu_ticks("self")
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    values = [int(v) for v in fields[:8]]
    busy = sum(values) - values[3] - values[4]
    # Our own child processes (inductor's compile workers) are our work, not competition.
    family = _descendants("self")
    ours += sum(_cpu_ticks(pid) for pid in family)
    now = CpuSample(time.monotonic(), busy / _TICKS, ours / _TICKS, values[1] / _TICKS)
    if previous is None or now.nice > previous.nice:
        now.niced = _lower_priority({"self", str(os.getpid()), *family})
    return now


def _lower_priority(skip: set[str]) -> dict[str, tuple[float, float]]:
    """pid -> (CPU seconds, CFS weight relative to ours) of processes niced below us."""
    ours = _nice_of(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split())
    found: dict[str, tuple[float, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name in skip:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        nice = _nice_of(stat)
        if nice > ours:
            weight = _CFS_WEIGHTS[nice + 20] / _CFS_WEIGHTS[ours + 20]
            found[entry.name] = ((int(stat[11]) + int(stat[12])) / _TICKS, weight)
    return found


def _nice_of(stat: list[str] | list[bytes]) -> int:
    """Field 19 (nice) of proc(5), clamped to the kernel's range."""
    return max(-20, min(19, int(stat[16])))


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
    """Cores that other processes kept busy between two samples, each weighed by its priority
    relative to ours (a nice-19 process's busy core counts as 15/1024 of one)."""
    elapsed = end.at - start.at
    if elapsed <= 0:
        return 0.0
    busy = (end.busy - start.busy) - (end.ours - start.ours)
    return max(0.0, (busy - _yielding(start, end)) / elapsed)


def _yielding(start: CpuSample, end: CpuSample) -> float:
    """CPU seconds of the window that lower-priority processes would give up to us.

    Needs both samples' per-process reads: a niced process that exited within the window, or
    started running when the previous sample had not read them, counts fully (as competition)
    for that one window.
    """
    if not start.niced or not end.niced:
        return 0.0
    given = 0.0
    for pid, (seconds, weight) in end.niced.items():
        before = start.niced.get(pid)
        if before is not None:
            given += max(0.0, seconds - before[0]) * (1.0 - weight)
    return given


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
    second = sample(first)
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

        now = sample(self._last)
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
