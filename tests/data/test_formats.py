"""Row formats → exact Conversations; detection; errors that name file, line and field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from instructune.config.schema import DataSource
from instructune.data.conversation import Conversation, DataError, Message, RowError
from instructune.data.formats import FORMATS, detect_format
from instructune.data.lineage import file_sha256
from instructune.data.loading import load_conversations

LOC = "f.jsonl:line 7"


def convert(name: str, row: dict[str, Any], columns: dict[str, str] | None = None) -> Conversation:
    return FORMATS[name].to_conversation(row, LOC, columns)


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- each format


def test_alpaca_with_input_system_and_label() -> None:
    row = {
        "instruction": "Translate.",
        "input": "Bonjour",
        "output": "Hello",
        "system": "Be brief.",
        "label": 3,
        "extra": [1, 2],  # unknown columns are ignored
    }
    assert convert("alpaca", row) == Conversation(
        messages=[
            Message("system", "Be brief."),
            Message("user", "Translate.\n\nBonjour"),
            Message("assistant", "Hello"),
        ],
        source=LOC,
        label="3",
        meta={"instruction": "Translate.", "input": "Bonjour"},
    )


def test_alpaca_empty_input_is_just_the_instruction() -> None:
    conv = convert("alpaca", {"instruction": "Say hi.", "input": "", "output": "Hi!"})
    assert conv.messages == [Message("user", "Say hi."), Message("assistant", "Hi!")]
    assert conv.meta == {"instruction": "Say hi.", "input": ""}
    assert conv.label is None


def test_sharegpt_roles_case_insensitive_and_top_level_system() -> None:
    row = {
        "system": "You are kind.",
        "conversations": [
            {"from": "Human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "user", "value": "2+2?"},
            {"from": "MODEL", "value": "4"},
        ],
    }
    assert convert("sharegpt", row) == Conversation(
        messages=[
            Message("system", "You are kind."),
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            Message("user", "2+2?"),
            Message("assistant", "4"),
        ],
        source=LOC,
    )


def test_messages_with_text_parts_and_system_turn() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "ab"},
        ],
        "label": "pos",
    }
    assert convert("messages", row) == Conversation(
        messages=[Message("system", "Sys"), Message("user", "a\nb"), Message("assistant", "ab")],
        source=LOC,
        label="pos",
    )


def test_dolly_keeps_category_and_alpaca_fields_in_meta() -> None:
    row = {
        "instruction": "Summarize.",
        "context": "Long text.",
        "response": "Short.",
        "category": "summarization",
    }
    assert convert("dolly", row) == Conversation(
        messages=[Message("user", "Summarize.\n\nLong text."), Message("assistant", "Short.")],
        source=LOC,
        meta={"instruction": "Summarize.", "input": "Long text.", "category": "summarization"},
    )


def test_text_is_one_assistant_message() -> None:
    assert convert("text", {"text": "Once upon a time."}) == Conversation(
        messages=[Message("assistant", "Once upon a time.")], source=LOC
    )


def test_columns_maps_our_names_to_the_file() -> None:
    row = {"q": "Capital of France?", "ctx": "", "a": "Paris", "y": "geo", "id": 5}
    columns = {"instruction": "q", "input": "ctx", "output": "a", "label": "y"}
    assert convert("columns", row, columns) == Conversation(
        messages=[Message("user", "Capital of France?"), Message("assistant", "Paris")],
        source=LOC,
        label="geo",
        meta={"instruction": "Capital of France?", "input": ""},
    )


def test_natural_instructions_expands_one_conversation_per_instance() -> None:
    task = {
        "Definition": ["Answer with the sum."],
        "Positive Examples": [{"input": "1+1", "output": "2", "explanation": "adds"}],
        "Instances": [
            {"id": "t1-a", "input": "2+2", "output": ["4", "four"]},
            {"id": "t1-b", "input": "3+3", "output": []},
            {"id": "t1-c", "input": "1+2", "output": ["3"]},
        ],
    }
    got = list(FORMATS["natural_instructions"].expand(task, "task.json:row 1 (line 1)"))
    assert got[0] == Conversation(
        messages=[Message("user", "Answer with the sum.\n\n2+2"), Message("assistant", "4")],
        source="task.json:row 1 (line 1) Instances[0]",
        meta={"id": "t1-a"},
    )
    assert isinstance(got[1], RowError)
    assert str(got[1]) == (
        "task.json:row 1 (line 1) Instances[1]: empty response: 'output' is an empty list"
    )
    assert isinstance(got[2], Conversation) and got[2].messages[1] == Message("assistant", "3")


# ----------------------------------------------------------------------------- row errors


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("alpaca", {"instruction": "x"}, "missing field 'output': columns found: instruction"),
        ("alpaca", {"instruction": "x", "output": None}, "missing field 'output': is null"),
        ("alpaca", {"instruction": "x", "output": ["a"]},
         "wrong type for 'output': expected a string, got list"),
        ("alpaca", {"instruction": "x", "output": "  "},
         "empty response: message 1 (assistant) is empty"),
        ("alpaca", {"instruction": "", "output": "y"}, "empty prompt"),
        ("dolly", {"instruction": "x", "response": ""}, "empty response"),
        ("sharegpt", {"conversations": [{"from": "bot", "value": "x"}]},
         "unknown role 'bot': in conversations[0]; expected one of ['assistant', 'function_call'"),
        ("sharegpt", {"conversations": "hi"}, "wrong type for 'conversations': expected a list"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}]}, "no assistant turn"),
        ("messages", {"messages": [{"role": "user", "content": "a"},
                                   {"role": "assistant"}]}, "missing field 'content'"),
        ("messages", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "unsupported content part 'image_url': in messages[0].content; only text"),
        ("messages", {"messages": [{"role": "user", "content": "a"},
                                   {"role": "system", "content": "s"},
                                   {"role": "assistant", "content": "b"}]},
         "system turn not first: message 1 is a system turn"),
        ("messages", {"messages": [{"role": "bot", "content": "a"}]}, "unknown role 'bot'"),
        ("messages", {"messages": [{"role": "tool", "content": "a"}]}, "no assistant turn"),
        ("text", {"text": ""}, "empty text"),
        ("text", {"text": {"a": 1}}, "wrong type for 'text': expected a string, got dict"),
    ],
)  # fmt: skip
def test_row_errors_name_location_and_field(name: str, row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowError) as info:
        convert(name, row)
    assert str(info.value).startswith(f"{LOC}: {message}")


def test_mapped_missing_column_says_which_mapping() -> None:
    with pytest.raises(RowError, match=r"missing field 'a': columns found: q \(data.columns maps"):
        convert("columns", {"q": "x"}, {"instruction": "q", "output": "a"})


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"messages", "id"}, "messages"),
        ({"messages", "instruction", "output"}, "messages"),
        ({"conversations", "system"}, "sharegpt"),
        ({"instruction", "context", "response", "category"}, "dolly"),
        ({"instruction", "response", "output"}, "dolly"),
        ({"instruction", "input", "output"}, "alpaca"),
        ({"Definition", "Instances", "Positive Examples"}, "natural_instructions"),
        ({"text", "meta"}, "text"),
        ({"text", "instruction", "output"}, "alpaca"),
    ],
)
def test_detect_format_priority(columns: set[str], expected: str) -> None:
    name, reason = detect_format(columns, LOC)
    assert name == expected
    assert reason.endswith(f"→ {expected}")


def test_detect_reason_names_the_columns() -> None:
    assert detect_format({"instruction", "output", "input"}, LOC) == (
        "alpaca",
        "columns instruction + output → alpaca",
    )


def test_detect_ambiguous_chat_columns() -> None:
    with pytest.raises(DataError, match="ambiguous rows: both 'messages' and 'conversations'"):
        detect_format({"messages", "conversations"}, LOC)


def test_detect_unknown_lists_columns_and_what_each_format_expects() -> None:
    with pytest.raises(DataError) as info:
        detect_format({"question", "answer"}, LOC)
    message = str(info.value)
    assert f"{LOC}: can't tell the row format from the columns ['answer', 'question']" in message
    assert "alpaca: instruction, output (optional: input, system, label)" in message
    assert "sharegpt: conversations" in message
    assert "natural_instructions: Definition, Instances" in message
    assert "data.columns" in message


# ----------------------------------------------------------------------------- loading


def test_load_detects_and_reports(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "A"}])
    result = load_conversations(DataSource(path=str(path)))
    assert (result.format, result.detected, result.reason) == (
        "alpaca",
        True,
        "columns instruction + output → alpaca",
    )
    assert result.rows_read == 1 and result.dropped == Counter()
    assert result.conversations[0].source == f"{path}:line 1"
    assert result.file_hash == file_sha256(path)


def test_load_fail_raises_the_first_bad_row_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "A"}\n{"instruction": "b"}\n')
    with pytest.raises(RowError, match=rf"{path}:line 2: missing field 'output'"):
        load_conversations(DataSource(path=str(path)), on_error="fail")


def test_load_skip_counts_by_reason_and_keeps_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [
        '{"instruction": "a", "output": "A"}',
        '{"instruction": "b"}',
        "{broken",
        '{"instruction": "c", "output": ""}',
        '{"instruction": "d", "output": ["D"]}',
        '{"instruction": "e"}',
        '{"instruction": "f", "output": "F"}',
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"instruction": "\xff"}\n')
    result = load_conversations(DataSource(path=str(path)), on_error="skip")
    assert [c.meta["instruction"] for c in result.conversations] == ["a", "f"]
    assert result.dropped == Counter(
        {
            "missing field 'output'": 2,
            "invalid JSON": 1,
            "empty response": 1,
            "wrong type for 'output'": 1,
            "not UTF-8": 1,
        }
    )
    assert result.rows_read == 8 == len(result.conversations) + result.dropped.total()
    assert result.errors[0] == f"{path}:line 2: missing field 'output': columns found: instruction"
    assert len(result.errors) == 6


def test_load_everything_dropped_is_a_data_error(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": ""}])
    with pytest.raises(DataError, match=r"no usable rows: all 1 rows were dropped \(empty resp"):
        load_conversations(DataSource(path=str(path)), on_error="skip")


def test_load_system_prompt_only_where_missing(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {
                "messages": [
                    {"role": "system", "content": "own"},
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"},
                ]
            },
        ],
    )
    result = load_conversations(DataSource(path=str(path)), system_prompt="Default.")
    assert [m.content for m in result.conversations[0].messages] == ["Default.", "a", "b"]
    assert [m.content for m in result.conversations[1].messages] == ["own", "c", "d"]


def test_load_csv_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("question,answer,topic\nWhat is 2+2?,4,math\nSky colour?,blue,nature\n")
    source = DataSource(
        path=str(path), columns={"instruction": "question", "output": "answer", "label": "topic"}
    )
    result = load_conversations(source)
    assert (result.format, result.detected, result.reason) == (
        "columns",
        True,
        "data.columns is set",
    )
    assert result.conversations[1] == Conversation(
        messages=[Message("user", "Sky colour?"), Message("assistant", "blue")],
        source=f"{path}:line 3",
        label="nature",
        meta={"instruction": "Sky colour?", "input": ""},
    )


def test_load_tsv_with_explicit_format_and_renamed_field(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("instruction\tresponse_text\nHi\tHello\n")
    source = DataSource(path=str(path), format="dolly", columns={"response": "response_text"})
    result = load_conversations(source)
    assert (result.format, result.detected, result.reason) == ("dolly", False, "set by data.format")
    assert result.conversations[0].messages == [
        Message("user", "Hi"),
        Message("assistant", "Hello"),
    ]


def test_load_columns_mapping_with_an_unknown_name(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}])
    source = DataSource(path=str(path), columns={"instruction": "q", "answer": "a"})
    with pytest.raises(DataError, match=r"data.columns maps \['answer'\].*valid names: \["):
        load_conversations(source)


def test_load_natural_instructions_file_respects_max_rows(tmp_path: Path) -> None:
    task = {
        "Definition": ["Negate."],
        "Positive Examples": [],
        "Negative Examples": [],
        "Instances": [{"id": f"i{n}", "input": str(n), "output": [str(-n)]} for n in range(5)],
    }
    path = tmp_path / "task001.json"
    path.write_text(json.dumps(task, indent=2))
    result = load_conversations(DataSource(path=str(path), max_rows=3))
    assert result.format == "natural_instructions"
    assert result.rows_read == 3
    assert [c.messages[1].content for c in result.conversations] == ["0", "-1", "-2"]
    assert result.conversations[2].messages[0].content == "Negate.\n\n2"


def test_load_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    table = pa.table({"text": ["first doc", "second doc"], "label": [0, 1]})
    pq.write_table(table, path)
    result = load_conversations(DataSource(path=str(path)))
    assert result.format == "text"
    assert [(c.messages[0].content, c.label, c.source) for c in result.conversations] == [
        ("first doc", "0", f"{path}:row 1"),
        ("second doc", "1", f"{path}:row 2"),
    ]


def test_load_datasets_folder_hashes_the_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(
        [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    ).save_to_disk(str(folder))
    result = load_conversations(DataSource(path=str(folder)))
    assert result.format == "sharegpt"
    assert result.conversations[0].messages == [Message("user", "q"), Message("assistant", "a")]
    assert result.file_hash == file_sha256(folder)


def test_every_format_is_described() -> None:
    assert sorted(FORMATS) == [
        "alpaca",
        "columns",
        "dolly",
        "messages",
        "natural_instructions",
        "preference",
        "sharegpt",
        "text",
    ]
    for name, row_format in FORMATS.items():
        assert row_format.name == name
        assert row_format.required and row_format.description.endswith(".")
