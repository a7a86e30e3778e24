"""Super-NaturalInstructions task files and OpenAssistant trees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import build, read_rows, write_jsonl

TASK = {
    "Definition": ["Answer with the opposite word"],
    "Positive Examples": [
        {"input": "hot", "output": "cold", "explanation": "opposites"},
        {"input": "up", "output": "down", "explanation": "directions"},
        {"input": "big", "output": "small"},
    ],
    "Negative Examples": [{"input": "yes", "output": "yes", "explanation": "not the opposite"}],
    "Instances": [
        {"id": f"i{i}", "input": f"word{i}", "output": [f"antiword{i}"]} for i in range(10)
    ],
}


@pytest.mark.parametrize(
    ("encoding", "present", "absent"),
    [
        ("definition", ["Definition: Answer with the opposite word."], ["Positive Example"]),
        ("pos", [" Positive Example 2 -\nInput: up.\n Output: down."], ["Example 3", "Negative"]),
        ("pos_neg", [" Negative Example 1 -\nInput: yes."], ["Explanation"]),
        ("pos_neg_expl", [" Explanation: not the opposite."], []),
    ],
)
def test_natural_instructions_encodings(
    tmp_path: Path, encoding: str, present: list[str], absent: list[str]
) -> None:
    (tmp_path / "task.json").write_text(json.dumps(TASK), encoding="utf-8")
    source = {
        "name": "ni",
        "path": str(tmp_path / "task.json"),
        "type": "natural_instructions",
        "natural_instructions": {"encoding": encoding, "max_instances": 6},
    }
    rows = read_rows(build(tmp_path, [source]).out_dir / "train.jsonl")
    assert len(rows) == 6
    prompt = rows[0]["messages"][0]["content"]
    assert all(p in prompt for p in present) and not any(a in prompt for a in absent)
    index = int(rows[0]["messages"][1]["content"].removeprefix("antiword"))
    assert prompt.endswith(f"Now complete the following example -\nInput: word{index}.\nOutput:")
    assert rows[0]["meta"]["template"] == f"natural_instructions/{encoding}"


def msg(text: str, role: str, replies: list[Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"text": text, "role": role, "lang": "en", "replies": replies or [], **kw}


def tree(t: int) -> dict[str, Any]:
    root = msg(
        f"t{t} question",
        "prompter",
        [
            msg(f"t{t} second best", "assistant", rank=1),
            msg(
                f"t{t} best answer",
                "assistant",
                [
                    msg(f"t{t} follow up", "prompter", [msg(f"t{t} final", "assistant")]),
                    msg(f"t{t} dangling user", "prompter"),
                ],
                rank=0,
            ),
            msg(f"t{t} deleted", "assistant", rank=-1, deleted=True),
        ],
    )
    return {"message_tree_id": f"tree{t}", "prompt": root}


def test_oasst_best_path_skips_deleted_and_drops_trailing_user(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "trees.jsonl", [tree(0)])
    source = {"name": "oa", "path": str(data), "type": "oasst"}
    result = build(tmp_path, [source])
    rows = read_rows(result.out_dir / "train.jsonl")
    assert [[m["content"] for m in r["messages"]] for r in rows] == [
        ["t0 question", "t0 best answer", "t0 follow up", "t0 final"]
    ]
    assert result.report.sources["oa"].notes["deleted message"] == 1


def test_oasst_all_paths_and_split_by_tree(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "trees.jsonl", [tree(t) for t in range(10)])
    source = {"name": "oa", "path": str(data), "type": "oasst", "oasst": {"paths": "all"}}
    result = build(tmp_path, [source], eval_fraction=0.3)
    train = read_rows(result.out_dir / "train.jsonl")
    evaluation = read_rows(result.out_dir / "eval.jsonl")
    assert len(train) + len(evaluation) == 30  # 3 conversations per tree (dangling one = prefix)
    conversations = [[m["content"] for m in r["messages"]] for r in train + evaluation]
    assert ["t0 question", "t0 best answer"] in conversations  # the trailing user turn dropped
    train_trees = {r["messages"][0]["content"].split()[0] for r in train}
    eval_trees = {r["messages"][0]["content"].split()[0] for r in evaluation}
    assert len(eval_trees) == 3 and not train_trees & eval_trees


def test_bad_instances_are_counted_under_skip(tmp_path: Path) -> None:
    task = {
        **TASK,
        "Instances": [*TASK["Instances"][:3], {"id": "bad", "input": "", "output": ["x"]}],
    }
    (tmp_path / "task.json").write_text(json.dumps(task), encoding="utf-8")
    source = {"name": "ni", "path": str(tmp_path / "task.json"), "type": "natural_instructions"}
    result = build(tmp_path, [source], on_error="skip")
    assert result.train_rows == 3
    assert result.report.sources["ni"].skipped == {"missing field 'input'": 1}
    with pytest.raises(
        ValueError, match=r"task.json:row 1 \(line 1\) Instances\[4\]: missing field 'input'"
    ):
        build(tmp_path, [source], "strict")


def test_oasst_languages_filter_messages(tmp_path: Path) -> None:
    trees = [tree(0), tree(1), {"message_tree_id": "lone", "prompt": msg("unanswered", "prompter")}]
    trees[1]["prompt"]["lang"] = "de"
    data = write_jsonl(tmp_path / "trees.jsonl", trees)
    source = {"name": "oa", "path": str(data), "type": "oasst", "oasst": {"languages": ["en"]}}
    result = build(tmp_path, [source])
    rows = read_rows(result.out_dir / "train.jsonl")
    assert [r["messages"][0]["content"] for r in rows] == ["t0 question"]
    notes = result.report.sources["oa"].notes
    assert notes["other language"] == 1 and notes["path without an assistant reply"] == 1
