"""Data paths that are not regular files, and records past the size limits, fail or are skipped
with a message that says what and where, without hanging or exhausting memory."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instructune.config.schema import DataSource
from instructune.data.conversation import DataError
from instructune.data.readers import iter_rows
from instructune.inference.generate import read_prompts
from instructune.synthesis.seeds import load_seeds


def within(seconds: float, fn: Callable[[], Any]) -> BaseException | None:
    """The exception `fn` raised, failing the test if it is still running after `seconds` (a
    read that hangs on a FIFO must not hang the suite: the thread is left behind, daemonic)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:  # handed to the test to inspect
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s (waiting on a FIFO?)"
    return outcome[0]


def special_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(tmp_path / "loop2.jsonl")
    (tmp_path / "loop2.jsonl").symlink_to(loop)
    dangling = tmp_path / "gone.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    return {
        "fifo": (fifo, "is a named pipe (FIFO), not a regular file"),
        "device": (Path("/dev/zero"), "is a character device, not a regular file"),
        "loop": (loop, "is a symbolic link loop"),
        "dangling": (dangling, f"is a symbolic link to {tmp_path / 'nowhere.jsonl'}, which"),
    }


@pytest.mark.parametrize("kind", ["fifo", "device", "loop", "dangling"])
def test_special_data_paths_say_what_they_are_without_opening_them(
    tmp_path: Path, kind: str
) -> None:
    path, expected = special_paths(tmp_path)[kind]
    error = within(5, lambda: list(iter_rows(DataSource(path=str(path)))))
    assert isinstance(error, DataError)
    assert str(error).startswith(f"{path}: {expected}")
    assert "did you mean" not in str(error)


@pytest.mark.parametrize("reader", [read_prompts, load_seeds])
def test_prompt_and_seed_files_that_are_fifos_are_refused_without_hanging(
    tmp_path: Path, reader: Callable[[Path], Any]
) -> None:
    path, expected = special_paths(tmp_path)["fifo"]
    seeds_json = tmp_path / "seeds.json"  # read whole by load_seeds, not line by line
    os.mkfifo(seeds_json)
    for each in (path, seeds_json):
        error = within(5, lambda each=each: reader(each))  # type: ignore[misc]
        assert isinstance(error, ValueError)
        assert str(each) in str(error) and expected in str(error)
