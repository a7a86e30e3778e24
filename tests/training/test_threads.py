"""The thread policy: threads follow the CPU that other processes leave free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from instructune.training.threads import (
    CpuSample,
    others_load,
    sample,
    thread_policy,
    threads_for,
)


@pytest.mark.parametrize(
    ("load", "cores", "current", "want"),
    [
        (0.0, 2, None, 2),
        (0.3, 2, None, 2),
        (0.6, 2, None, 1),
        (1.0, 2, None, 1),
        (3.0, 2, None, 1),  # never fewer than one thread
        (1.2, 8, None, 7),
        (1.6, 8, None, 6),
        (0.3, 2, 1, 1),  # a taken core stays taken until the load falls under FREE_CORE
        (0.1, 2, 1, 2),
        (0.0, 2, 2, 2),
    ],
)
def test_threads_for(load: float, cores: int, current: int | None, want: int) -> None:
    assert threads_for(load, cores, current) == want


def test_others_load_is_busy_time_minus_ours() -> None:
    start = CpuSample(at=10.0, busy=100.0, ours=5.0)
    end = CpuSample(at=12.0, busy=103.0, ours=6.0)  # 3 s busy, 1 s of it ours, over 2 s
    assert others_load(start, end) == pytest.approx(1.0)
    assert others_load(end, end) == 0.0


_BUSY_SECOND = "import time\nwhile time.process_time() < 1.0: pass\n"
"""One second of CPU, however long that takes on a busy machine (the assertions are about CPU
seconds, not rates, so other load on the machine can't make them fail)."""


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_cpu(pid: int, seconds: float) -> float:
    """Wait until `pid` has used `seconds` more CPU (a minute at most); its CPU time then."""
    start, deadline = _cpu_seconds(pid), time.monotonic() + 60
    while _cpu_seconds(pid) - start < seconds and time.monotonic() < deadline:
        time.sleep(0.05)
    return _cpu_seconds(pid)


def test_a_busy_process_counts_as_load(tmp_path: Path) -> None:
    """A process that is not ours: started through an intermediate that exits at once, so it is
    re-parented away from us and its CPU time never reaches our waited-for children's time."""
    first = sample()
    if first is None:
        pytest.fail("/proc is missing: the thread policy cannot measure on this machine")
    done = tmp_path / "done"
    busy = _BUSY_SECOND + f"open({str(done)!r}, 'w').close()"
    spawn = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {busy!r}])"
    subprocess.run([sys.executable, "-c", spawn], check=True)
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # its exit
    second = sample(first)
    assert done.exists() and second is not None
    # its CPU second (and whatever else ran meanwhile) counted as other processes' work
    assert others_load(first, second) * (second.at - first.at) >= 0.9


def test_children_that_exited_stay_ours() -> None:
    """Short-lived children (compiler processes under inductor's workers) count as ours after
    they exit: their time moves to our waited-for children's time, not to the competition."""
    first = sample()
    subprocess.run([sys.executable, "-c", _BUSY_SECOND], check=True)
    second = sample()
    assert first is not None and second is not None
    # (others_load itself is not asserted: pytest-xdist's other worker may be busy meanwhile)
    assert second.ours - first.ours >= 0.95


def test_our_own_child_processes_are_not_competition() -> None:
    """A live child (like inductor's compile workers) burning CPU counts as ours."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        _wait_for_cpu(child.pid, 0.05)  # past the interpreter's start-up
        first, child_before = sample(), _cpu_seconds(child.pid)
        child_after = _wait_for_cpu(child.pid, 0.5)
        second = sample()
        assert first is not None and second is not None
        assert child_after - child_before >= 0.5
        # the child's CPU time, counted as ours (the ticks of two reads apart: 0.05 s of slack)
        assert second.ours - first.ours >= child_after - child_before - 0.05
    finally:
        child.kill()
        child.wait()


def test_num_threads_overrides_the_policy() -> None:
    before = torch.get_num_threads()
    try:
        assert thread_policy(1) is None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_lower_priority_processes_weigh_by_their_cfs_share() -> None:
    """One core kept busy for the whole window: a nice-0 process takes a core from us, a nice-19
    one (15/1024 of a contended core) does not."""
    start = CpuSample(at=0.0, busy=0.0, ours=0.0, nice=0.0, niced={"42": (5.0, 15 / 1024)})
    end = CpuSample(at=1.0, busy=2.0, ours=1.0, nice=1.0, niced={"42": (6.0, 15 / 1024)})
    assert others_load(start, end) == pytest.approx(15 / 1024)
    assert threads_for(others_load(start, end), 2) == 2
    assert threads_for(others_load(start, end), 2, current=1) == 2  # and back to 2 from 1
    equal = CpuSample(at=1.0, busy=2.0, ours=1.0)  # the same second, not niced
    assert threads_for(others_load(start, equal), 2) == 1
    # a niced process that is new in the window (or exited) is not weighed: it counts fully
    new = CpuSample(at=1.0, busy=2.0, ours=1.0, nice=1.0, niced={"43": (1.0, 15 / 1024)})
    assert others_load(start, new) == pytest.approx(1.0)


def _spin_detached(nice: int) -> int:
    """A busy process at `nice` that is not ours (started through an intermediate that exits at
    once, like the busy process above), spinning until killed; returns its pid."""
    spin = f"import os\nos.nice({nice})\nwhile True: pass"
    spawn = (
        "import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', "
        f"{spin!r}], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint(child.pid)"
    )
    spawned = subprocess.run(
        [sys.executable, "-c", spawn], check=True, capture_output=True, text=True, timeout=60
    )
    return int(spawned.stdout)


@pytest.mark.parametrize("nice", [19, 0])
def test_a_niced_busy_process_is_not_competition_but_a_nice_0_one_is(nice: int) -> None:
    """A real busy process at nice 19 and at nice 0, measured as the policy measures. Other
    processes on the machine (a parallel test worker) add to the raw and the weighed load alike,
    so what is asserted is the busy process's own CPU time: nearly all of it removed from the
    load at nice 19 (it would yield its core to us), all of it counted at nice 0."""
    pid = _spin_detached(nice)
    try:
        _wait_for_cpu(pid, 0.05)  # running, at its nice value
        first, before = sample(), _cpu_seconds(pid)
        assert first is not None
        spent = _wait_for_cpu(pid, 0.3) - before  # nice 19 runs slowly on a busy machine
        second = sample(first)
        assert second is not None and spent >= 0.3
        elapsed = second.at - first.at
        raw = ((second.busy - first.busy) - (second.ours - first.ours)) / elapsed
        removed = (raw - others_load(first, second)) * elapsed
        if nice == 19:
            assert second.niced is not None and second.niced[str(pid)][1] == 15 / 1024
            assert removed >= spent * (1 - 15 / 1024) - 0.05
        else:
            assert second.niced is None or str(pid) not in second.niced
            assert others_load(first, second) * elapsed >= spent - 0.05
    finally:
        os.kill(pid, signal.SIGKILL)
