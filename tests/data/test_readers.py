"""Readers: every file shape yields (location, row); bad rows are yielded as errors, not raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructune.config.schema import DataSource
from instructune.data.conversation import DataError, RowError
from instructune.data.readers import iter_rows


def rows(path: Path, **kwargs: object) -> list[tuple[str, object]]:
    return list(iter_rows(DataSource(path=str(path), **kwargs)))  # type: ignore[arg-type]


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def test_jsonl_locations_and_a_malformed_line_costs_only_that_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": 2,\n{"a": 3}\n[1]\n')
    got = rows(path)
    assert [loc for loc, _ in got] == [f"{path}:line {n}" for n in (1, 3, 4, 5)]
    assert got[0][1] == {"a": 1}
    assert got[2][1] == {"a": 3}
    error = got[1][1]
    assert isinstance(error, RowError)
    assert error.reason == "invalid JSON"
    assert str(error).startswith(f"{path}:line 3: invalid JSON: Expecting")
    assert isinstance(got[3][1], RowError)
    assert "not a JSON object: got an array" in str(got[3][1])


def test_jsonl_non_utf8_line_is_a_row_error_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", b'{"a": "ok"}\n{"a": "caf\xe9"}\n{"a": "\xc3\xa9"}\n')
    got = rows(path)
    assert got[0][1] == {"a": "ok"}
    assert isinstance(got[1][1], RowError)
    assert str(got[1][1]) == f"{path}:line 2: not UTF-8: byte 0xe9 at column 11"
    assert got[2][1] == {"a": "é"}


def test_json_array_rows_carry_element_and_line(tmp_path: Path) -> None:
    text = '[\n  {"a": 1},\n  {\n    "a": 2\n  }, {"a": 3}\n]\n'
    path = write(tmp_path / "d.json", text)
    got = rows(path)
    assert got == [
        (f"{path}:row 1 (line 2)", {"a": 1}),
        (f"{path}:row 2 (line 3)", {"a": 2}),
        (f"{path}:row 3 (line 5)", {"a": 3}),
    ]


def test_json_array_broken_element_is_one_row_error_and_later_rows_are_read(
    tmp_path: Path,
) -> None:
    text = (
        "[\n"
        '  {"a": 1, "b": {"c": 1}},\n'
        '  {"a": 2,, "b": {"c": 2}},\n'  # syntax error; its nested object must not become a row
        '  {"a": 3},\n'
        '  "not an object",\n'
        '  {"a": "caf\xe9"}\n'
        "]"
    )
    path = write(tmp_path / "d.json", text.encode("latin-1"))
    got = rows(path)
    assert [loc for loc, _ in got] == [f"{path}:row {n} (line {n + 1})" for n in range(1, 6)]
    assert got[0][1] == {"a": 1, "b": {"c": 1}}
    assert isinstance(got[1][1], RowError) and got[1][1].reason == "invalid JSON"
    assert "at line 3 column" in str(got[1][1])
    assert got[2][1] == {"a": 3}
    assert isinstance(got[3][1], RowError) and got[3][1].reason == "not a JSON object"
    assert isinstance(got[4][1], RowError)
    assert str(got[4][1]) == f"{path}:row 5 (line 6): not UTF-8: byte 0xe9 on line 6"


def test_json_array_broken_beyond_recovery_is_fatal_after_the_row_error(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '[{"a": 1}, {"a": 2,, }, {"a": 3}]')
    it = iter_rows(DataSource(path=str(path)))
    assert next(it)[1] == {"a": 1}
    assert isinstance(next(it)[1], RowError)
    with pytest.raises(DataError, match="elements after it can't be located"):
        next(it)


def test_json_object_with_one_list_field_yields_its_elements(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '{"version": 2,\n "data": [{"a": 1},\n {"a": 2}]}\n')
    assert rows(path) == [
        (f"{path}:row 1 (line 2)", {"a": 1}),
        (f"{path}:row 2 (line 3)", {"a": 2}),
    ]


def test_json_object_with_other_lists_is_one_record(tmp_path: Path) -> None:
    task = {"Definition": ["Add."], "Instances": [{"id": "x", "input": "1+1", "output": ["2"]}]}
    path = write(tmp_path / "task.json", json.dumps(task, indent=1))
    assert rows(path) == [(f"{path}:row 1 (line 1)", task)]


def test_json_file_holding_json_lines_is_read_line_by_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '{"a": 1}\n{"a": 2}\n')
    assert rows(path) == [(f"{path}:line 1", {"a": 1}), (f"{path}:line 2", {"a": 2})]


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("d.json", "hello", r"not JSON \(expected '\[' or '\{' at line 1"),
        ("d.json", '[{"a": 1}', "JSON array is not closed"),
        ("d.json", '[{"a": 1}] x', "extra data after the JSON value at line 1"),
        ("d.jsonl", '[\n{"a": 1}\n]', "looks like a JSON array, not JSON lines"),
        ("d.txt", "x", r"unsupported file type '\.txt'; supported: \.csv, \.json"),
        ("d.parquet", "not parquet", "not a readable Parquet file"),
    ],
)
def test_file_level_problems_are_data_errors(
    tmp_path: Path, name: str, data: str, match: str
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(DataError, match=match):
        rows(path)


def test_missing_file_names_the_path_and_close_matches(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"a": 1}\n')
    with pytest.raises(DataError) as info:
        rows(tmp_path / "trian.jsonl")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'trian.jsonl'}: no such file or folder locally")
    assert f"did you mean {tmp_path / 'train.jsonl'}?" in message


def test_hub_id_offline_says_not_local_and_hub_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        rows(Path("no-such-org/no-such-dataset"))
    message = str(info.value)
    assert "no-such-org/no-such-dataset: no such file or folder locally" in message
    assert "Hub is unreachable or offline" in message


def test_csv_lines_count_the_header_and_multiline_fields(tmp_path: Path) -> None:
    text = 'question,answer\nWhat?,"two\nlines"\n\nshort\nWhy?,Because\n'
    path = write(tmp_path / "d.csv", text)
    got = rows(path)
    assert got[0] == (f"{path}:line 2", {"question": "What?", "answer": "two\nlines"})
    assert isinstance(got[1][1], RowError)
    assert str(got[1][1]) == f"{path}:line 5: wrong number of fields: 1 fields, the header has 2"
    assert got[2] == (f"{path}:line 6", {"question": "Why?", "answer": "Because"})


def test_tsv_and_non_utf8_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", b"q\ta\nHi\tHello\nCaf\xe9\tok\n")
    got = rows(path)
    assert got[0] == (f"{path}:line 2", {"q": "Hi", "a": "Hello"})
    assert str(got[1][1]) == f"{path}:line 3: not UTF-8: in column 'q'"


def test_parquet_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"], "output": ["A", None]}), path)
    assert rows(path) == [
        (f"{path}:row 1", {"instruction": "a", "output": "A"}),
        (f"{path}:row 2", {"instruction": "b", "output": None}),
    ]


def test_datasets_saved_folder_picks_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list([{"text": "t1"}, {"text": "t2"}])
    test = datasets.Dataset.from_list([{"text": "e1"}])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    train.save_to_disk(str(tmp_path / "single"))
    folder = tmp_path / "dd"
    assert rows(folder) == [
        (f"{folder}:row 1", {"text": "t1"}),
        (f"{folder}:row 2", {"text": "t2"}),
    ]
    assert rows(folder, split="test") == [(f"{folder}:row 1", {"text": "e1"})]
    assert [r for _, r in rows(tmp_path / "single")] == [{"text": "t1"}, {"text": "t2"}]
    with pytest.raises(DataError, match=r"no split 'dev'; choose one of \['test', 'train'\]"):
        rows(folder, split="dev")


def test_plain_folder_is_a_data_error(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", "{}\n")
    with pytest.raises(DataError, match=r"not one saved by `datasets`.*\['a.jsonl'\]"):
        rows(tmp_path)


def test_max_rows_counts_bad_rows_too(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\nbad\n{"a": 3}\n{"a": 4}\n')
    got = rows(path, max_rows=3)
    assert [loc for loc, _ in got] == [f"{path}:line {n}" for n in (1, 2, 3)]


def test_jsonl_reads_50k_rows_fast(tmp_path: Path) -> None:
    import time

    line = json.dumps({"instruction": "Say hello", "input": "", "output": "Hello there! " * 8})
    path = write(tmp_path / "big.jsonl", (line + "\n") * 50_000)
    start = time.perf_counter()
    count = sum(1 for _ in iter_rows(DataSource(path=str(path))))
    elapsed = time.perf_counter() - start
    assert count == 50_000
    assert elapsed < 1.0, f"reading 50k JSONL rows took {elapsed:.2f}s"
