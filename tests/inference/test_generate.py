"""`instructune generate`: a JSONL file batched through the engine, ids kept; one streamed prompt;
bad rows are one-line errors naming file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from instructune.bundle import load_bundle
from instructune.cli.main import main
from instructune.data.conversation import Message
from instructune.inference.engine import Engine, SamplingParams

ROWS = [
    {"id": "a", "prompt": "What is 3 plus 3?"},
    {"prompt": "What is the capital of France?", "system": "Be brief."},
    {"id": 7, "messages": [{"role": "user", "content": "Hi"}]},
]


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_batch_keeps_ids_and_matches_engine(
    tiny_lora_run: Path, tmp_path: Path, capsys: Any
) -> None:
    src, out = _write(tmp_path / "in.jsonl", ROWS), tmp_path / "out.jsonl"
    args = ["generate", str(tiny_lora_run), "--input", str(src), "--output", str(out)]
    assert main([*args, "--max-new-tokens", "6", "--batch-size", "2"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["a", 2, 7]
    assert "wrote 3 rows" in capsys.readouterr().out

    engine = Engine.from_bundle(load_bundle(tiny_lora_run))
    convs = [
        [Message("user", "What is 3 plus 3?")],
        [Message("system", "Be brief."), Message("user", "What is the capital of France?")],
        [Message("user", "Hi")],
    ]
    expected = engine.chat(convs, SamplingParams(max_new_tokens=6))
    for row, c in zip(got, expected, strict=True):
        assert row["text"] == c.text and row["finish_reason"] == c.finish_reason
        assert row["prompt_tokens"] == c.prompt_tokens > 0
        assert row["completion_tokens"] == c.completion_tokens <= 6


def test_single_prompt_streams_to_stdout(tiny_model_dir: Path, capsys: Any) -> None:
    rc = main(["generate", str(tiny_model_dir), "--prompt", "Hi", "--max-new-tokens", "5"])
    assert rc == 0
    engine = Engine.from_bundle(load_bundle(tiny_model_dir))
    text = engine.chat([[Message("user", "Hi")]], SamplingParams(max_new_tokens=5))[0].text
    assert capsys.readouterr().out == text + "\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"in\.jsonl:2: invalid JSON"),
        ('{"id": 1}', r"in\.jsonl:2: needs 'prompt'"),
        (
            '{"messages": [{"role": "robot", "content": "x"}]}',
            r"in\.jsonl:2: unknown role 'robot': in messages\[0\]",
        ),
    ],
)
def test_bad_rows_are_one_line_errors(
    tiny_model_dir: Path, tmp_path: Path, capsys: Any, line: str, message: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n", encoding="utf-8")
    rc = main(["generate", str(tiny_model_dir), "--input", str(src), "--output", "o.jsonl"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert re.search(message, err)


def test_bad_flags_are_one_line_errors(tiny_model_dir: Path, capsys: Any) -> None:
    rc = main(["generate", str(tiny_model_dir), "--prompt", "x", "--top-p", "0"])
    assert rc == 1 and capsys.readouterr().err.startswith("error: top_p=0.0")
    rc = main(["generate", str(tiny_model_dir / "nope"), "--prompt", "x"])
    assert rc == 1 and "nope" in capsys.readouterr().err
