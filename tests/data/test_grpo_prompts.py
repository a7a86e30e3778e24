"""Prompts for online RL: each row's turns before its last answer, each prompt once, and
prompts that leave no room for an answer under `data.max_length` dropped and counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructune.config import DataConfig, DataSource
from instructune.data.grpo_prompts import prepare_prompts


def _config(tmp_path: Path, rows: list[dict[str, Any]], max_length: int = 256) -> DataConfig:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return DataConfig(train=[DataSource(path=str(path))], max_length=max_length, dedup=False)


def test_prompts_end_before_the_last_answer_once_each(tmp_path: Path, tiny_tok: Any) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
    ]
    rows = [
        {"messages": chat},
        {"messages": chat},  # the same prompt again
        {"messages": [{"role": "user", "content": "word " * 300}, chat[-1]]},  # no room to answer
    ]
    prepared = prepare_prompts(_config(tmp_path, rows), tiny_tok, max_completion_length=16)
    assert prepared.train == [chat[:-1]]
    assert prepared.dropped == {"duplicate_prompt": 1, "prompt_too_long": 1}
    assert [r["reason"] for r in prepared.dropped_rows] == ["duplicate_prompt", "prompt_too_long"]
    rendered = tiny_tok.apply_chat_template(prepared.train[0], add_generation_prompt=True)
    assert prepared.prompt_tokens == len(rendered["input_ids"])
    assert len(prepared.hashes["train"]) == 64


def test_no_prompt_left_is_an_error(tmp_path: Path, tiny_tok: Any) -> None:
    rows = [{"instruction": "word " * 300, "input": "", "output": "ok"}]
    with pytest.raises(ValueError, match="no prompts left for grpo"):
        prepare_prompts(_config(tmp_path, rows), tiny_tok, max_completion_length=16)
