"""Property tests over the readers and formats: whatever the bytes, a file loads or fails with a
one-line error naming the file (and the line for a row), and no row is lost without a count."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instructune.config.schema import DataConfig, DataSource
from instructune.data.conversation import RowError
from instructune.data.loading import LoadResult, load_conversations

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not os.environ.get("FUZZ_EXAMPLES"),  # fixed examples unless asked for more
)
EXTENSIONS = [".jsonl", ".json", ".csv", ".tsv", ".parquet"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["instruction", "input", "output", "messages", "conversations", "text", "role", "content"]
# rows shaped like the formats, with fields of any type: where converters meet surprises
row_like = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6),
    json_values
    | st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                "from": st.sampled_from(["human", "gpt", "observation", "?"]),
                "content": json_values,
                "value": json_values,
            },
        ),
        max_size=4,
    ),
    max_size=5,
)


def _load(path: Path, on_error: str) -> LoadResult | ValueError:
    """The result, or the error: which must be a one-line ValueError naming the file."""
    try:
        return load_conversations(DataSource(path=str(path)), on_error)  # type: ignore[arg-type]
    except ValueError as err:
        message = str(err)
        assert "\n" not in message, message
        assert str(path) in message, message
        if isinstance(err, RowError):
            assert message.startswith(f"{path}:line ") or message.startswith(f"{path}:row "), (
                message
            )
        return err


def _check_counts(result: LoadResult | ValueError) -> None:
    if isinstance(result, LoadResult):  # every row read is kept or counted by reason
        assert result.rows_read == len(result.conversations) + sum(result.dropped.values())
        assert len(result.dropped_rows) == sum(result.dropped.values())


_COUNTER = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _file(folder: Path, data: bytes, suffix: str) -> Path:
    path = folder / f"data{next(_COUNTER)}{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from(EXTENSIONS))
def test_random_bytes(folder: Path, data: bytes, suffix: str) -> None:
    path = _file(folder, data, suffix)
    for on_error in ("skip", "fail"):
        _check_counts(_load(path, on_error))


@FUZZ
@given(rows=st.lists(json_values, min_size=1, max_size=6), cut=st.floats(0, 1), array=st.booleans())
def test_random_json_shapes_and_truncated_files(
    folder: Path, rows: list[Any], cut: float, array: bool
) -> None:
    text = json.dumps(rows, indent=1) if array else "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode()
    for piece in (data, data[: int(len(data) * cut)]):
        path = _file(folder, piece, ".json" if array else ".jsonl")
        _check_counts(_load(path, "skip"))
        _load(path, "fail")


@FUZZ
@given(rows=st.lists(row_like, min_size=1, max_size=6), suffix=st.sampled_from([".jsonl", ".json"]))
def test_format_shaped_rows(folder: Path, rows: list[dict[str, Any]], suffix: str) -> None:
    text = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    path = _file(folder, text.encode(), suffix)
    _check_counts(_load(path, "skip"))
    _load(path, "fail")


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.text(max_size=40), st.text(max_size=40)),
        min_size=1,
        max_size=8,
    ),
    suffix=st.sampled_from([".jsonl", ".csv", ".tsv"]),
)
def test_unicode_text_round_trips(
    folder: Path, rows: list[tuple[str, str, str]], suffix: str
) -> None:
    fields = ["instruction", "input", "output"]
    if suffix == ".jsonl":
        text = "".join(json.dumps(dict(zip(fields, r, strict=True))) + "\n" for r in rows)
    else:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if suffix == ".csv" else "\t")
        writer.writerows([fields, *rows])
        text = buffer.getvalue()
    path = _file(folder, text.encode("utf-8"), suffix)
    result = _load(path, "skip")
    _check_counts(result)
    if isinstance(result, LoadResult):  # what was kept is exactly what was written
        kept = [
            (c.meta["instruction"], c.meta["input"], c.messages[-1].content)
            for c in result.conversations
        ]
        usable = [r for r in rows if (r[0].strip() or r[1].strip()) and r[2].strip()]
        assert kept == usable


@pytest.fixture(scope="module")
def tok() -> Any:
    from ..tiny import tiny_tokenizer

    return tiny_tokenizer()


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "instruction": st.text(max_size=60),
                "input": st.text(max_size=30),
                "output": st.text(max_size=60),
            }
        ),
        min_size=1,
        max_size=10,
    ),
    max_length=st.sampled_from([16, 48, 256]),
    truncation=st.sampled_from(["turns", "truncate_prompt", "drop"]),
)
def test_prepare_counts_every_row(
    folder: Path, tok: Any, rows: list[dict[str, str]], max_length: int, truncation: str
) -> None:
    """Through the whole data stage: rows kept as examples + rows counted as dropped = rows."""
    from instructune.data.conversation import DataError
    from instructune.data.pipeline import prepare_dataset

    path = _file(folder, "".join(json.dumps(r) + "\n" for r in rows).encode(), ".jsonl")
    cfg = DataConfig(
        train=[DataSource(path=str(path))],
        max_length=max_length,
        truncation=truncation,  # type: ignore[arg-type]
        on_error="skip",
        packing=False,
        audit=True,
    )
    try:
        prepared = prepare_dataset(cfg, tok)
    except DataError as err:  # every row was unusable: said so in one line
        assert "no usable rows" in str(err) and "\n" not in str(err)
        return
    assert len(prepared.train) + sum(prepared.dropped.values()) == len(rows)
    assert len(prepared.dropped_rows) == sum(prepared.dropped.values())
