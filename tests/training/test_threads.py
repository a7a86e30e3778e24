"""The thread policy: threads follow the CPU that other processes leave free."""

from __future__ import annotations

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


_BUSY_SECOND = "import time\nt=time.time()\nwhile time.time()-t<1.0: pass\n"


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
    deadline = time.monotonic() + 30
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # its exit
    second = sample()
    assert done.exists() and second is not None and second.at - first.at >= 0.9
    assert others_load(first, second) >= 0.4  # its second of CPU, over about 1.3 s


def test_children_that_exited_stay_ours() -> None:
    """Short-lived children (compiler processes under inductor's workers) count as ours after
    they exit: their time moves to our waited-for children's time, not to the competition."""
    first = sample()
    subprocess.run([sys.executable, "-c", _BUSY_SECOND], check=True)
    second = sample()
    assert first is not None and second is not None
    # (others_load itself is not asserted: pytest-xdist's other worker may be busy meanwhile)
    assert second.ours - first.ours >= 0.8


def test_our_own_child_processes_are_not_competition() -> None:
    """A live child (like inductor's compile workers) burning CPU counts as ours."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"]
    )
    try:
        time.sleep(0.5)  # past the interpreter's start-up
        first = sample()
        time.sleep(1.0)
        second = sample()
        assert first is not None and second is not None
        assert second.ours - first.ours >= 0.5  # the child's CPU second, counted as ours
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
