"""Data paths that are not regular files, and records past the size limits, fail or are skipped
with a message that says what and where, without hanging or exhausting memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instructune.config.schema import DataSource
from instructune.data.conversation import DataError, RowError
from instructune.data.loading import load_conversations
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


LIMIT = 1 << 20


def test_a_jsonl_line_over_the_limit_is_a_row_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    big = '{"text": "' + "x" * (3 * LIMIT) + '"}'
    path.write_text(f'{{"text": "a"}}\n{big}\n{{"text": "b"}}\n')
    got = list(iter_rows(DataSource(path=str(path), max_record_bytes=LIMIT)))
    assert [loc for loc, _ in got] == [f"{path}:line {n}" for n in (1, 2, 3)]
    assert got[0][1] == {"text": "a"} and got[2][1] == {"text": "b"}
    error = got[1][1]
    assert isinstance(error, RowError) and error.reason == "record too large"
    assert str(error) == (
        f"{path}:line 2: record too large: {len(big) + 1} bytes, over the max_record_bytes limit "
        f"of {LIMIT} (set max_record_bytes on the data source to read larger rows)"
    )
    # the default limit (16 MiB) reads the same line
    assert list(iter_rows(DataSource(path=str(path))))[1][1] == json.loads(big)


def test_a_record_over_the_limit_is_skipped_and_counted_or_fails(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    rows[1]["output"] = "y" * (2 * LIMIT)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = DataSource(path=str(path), max_record_bytes=LIMIT)
    result = load_conversations(source, on_error="skip")
    assert len(result.conversations) == 2
    assert result.dropped == {"record too large": 1}
    assert result.dropped_rows[0].source == f"{path}:line 2"
    with pytest.raises(RowError, match=rf"^{re.escape(str(path))}:line 2: record too large"):
        load_conversations(source, on_error="fail")


def test_a_json_array_element_over_the_limit_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "z" * (2 * LIMIT)}, {"text": "b"}]))
    got = list(iter_rows(DataSource(path=str(path), max_record_bytes=LIMIT)))
    assert [row for _, row in got][::2] == [{"text": "a"}, {"text": "b"}]
    assert isinstance(got[1][1], RowError) and got[1][1].reason == "record too large"
    assert got[1][0] == f"{path}:row 2 (line 1)"


@pytest.mark.parametrize("reader", [read_prompts, load_seeds])
def test_prompt_and_seed_lines_over_the_limit_name_file_and_line(
    tmp_path: Path, reader: Callable[[Path], Any]
) -> None:
    path = tmp_path / "p.jsonl"
    first = '{"prompt": "hi", "instruction": "hi", "output": "ho"}\n'
    path.write_text(first + '{"prompt": "' + "x" * (17 << 20) + '"}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: record too large: "):
        reader(path)


_READ_BIG_LINE = """
import sys
from instructune.config.schema import DataSource
from instructune.data.readers import iter_rows
def peak_kb():  # VmHWM, not ru_maxrss: ru_maxrss survives exec (a child reports the parent's)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = peak_kb()
rows = iter_rows(DataSource(path=sys.argv[1], max_record_bytes=int(sys.argv[2])))
reasons = [getattr(row, "reason", "row") for _, row in rows]
after = peak_kb()
print(reasons, (after - before) // 1024)
"""


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_reading_a_huge_line_holds_only_the_limit_in_memory(tmp_path: Path, suffix: str) -> None:
    """A 30 MB line under a 1 MiB limit: the reader's peak memory grows by a few MB, not by the
    line (reading the line whole costs it about three times over: bytes, text and parsed)."""
    path = tmp_path / f"big{suffix}"
    with path.open("w") as f:
        f.write('{"text": "')
        for _ in range(30):
            f.write("x" * (1 << 20))
        f.write('"}\n{"text": "small"}\n')
    done = subprocess.run(
        [sys.executable, "-c", _READ_BIG_LINE, str(path), str(LIMIT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reasons, growth_mb = done.stdout.rsplit(" ", 1)
    assert reasons == "['record too large', 'row']"
    assert int(growth_mb) < 8


def test_csv_cells_over_128_kib_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    cell = "w" * (300 << 10)
    path.write_text(f'question,answer\nshort,"{cell}"\nq,a\n')
    got = list(iter_rows(DataSource(path=str(path))))
    assert got[0] == (f"{path}:line 2", {"question": "short", "answer": cell})
    assert got[1] == (f"{path}:line 3", {"question": "q", "answer": "a"})


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_cells_over_the_limit_stop_the_read_naming_file_and_line(
    tmp_path: Path, quoted: bool
) -> None:
    """A line over the limit (unquoted) or a quoted cell spanning lines over it: csv can't find
    the next record inside a broken one, so the read stops, naming the line the record starts."""
    path = tmp_path / "d.tsv"
    cell = "\n".join(["v" * 1000] * 10) if quoted else "v" * 10_000
    path.write_text(f'question\tanswer\nq\ta\nshort\t"{cell}"\nq\ta\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:line 3: ") as info:
        list(iter_rows(DataSource(path=str(path), max_record_bytes=4096)))
    assert "max_record_bytes" in str(info.value)
