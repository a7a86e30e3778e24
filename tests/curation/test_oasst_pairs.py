"""OpenAssistant trees → preference pairs from sibling ranks (`oasst.output: pairs`): which
pairs, what is counted, the split by tree, and rows that the preference readers read and DPO
trains on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from instructune.config import Config, DataConfig, DataSource
from instructune.data.preference import PreparedPairs, prepare_pairs
from instructune.training.run import run_train

from .helpers import build, read_rows, write_jsonl
from .test_sources import msg


def ranked_tree(t: int) -> dict[str, Any]:
    """The root question has three ranked replies, a deleted and an unranked one; the best
    reply's follow-up has two ranked replies; the second reply's follow-up only one."""
    follow_up = msg(
        f"t{t} follow up",
        "prompter",
        [msg(f"t{t} good end", "assistant", rank=0), msg(f"t{t} bad end", "assistant", rank=1)],
    )
    more = msg(f"t{t} more?", "prompter", [msg(f"t{t} lone reply", "assistant", rank=0)])
    root = msg(
        f"t{t} question",
        "prompter",
        [
            msg(f"t{t} second", "assistant", [more], rank=1),
            msg(f"t{t} best", "assistant", [follow_up], rank=0),
            msg(f"t{t} third", "assistant", rank=2),
            msg(f"t{t} deleted", "assistant", rank=3, deleted=True),
            msg(f"t{t} unranked", "assistant"),
        ],
    )
    return {"message_tree_id": f"tree{t}", "prompt": root}


def pair_texts(rows: list[dict[str, Any]]) -> list[tuple[list[str], str, str]]:
    return [([m["content"] for m in r["messages"]], r["chosen"], r["rejected"]) for r in rows]


@pytest.mark.parametrize(
    ("oasst", "expected", "notes"),
    [
        (
            {"output": "pairs"},
            [
                (["t0 question"], "t0 best", "t0 second"),
                (["t0 question"], "t0 best", "t0 third"),
                (["t0 question", "t0 best", "t0 follow up"], "t0 good end", "t0 bad end"),
            ],
            {"deleted message": 1, "pairs: unranked reply": 1},
        ),
        (
            {"output": "pairs", "pair_with": "worst"},
            [
                (["t0 question"], "t0 best", "t0 third"),
                (["t0 question", "t0 best", "t0 follow up"], "t0 good end", "t0 bad end"),
            ],
            {"deleted message": 1, "pairs: unranked reply": 1},
        ),
        (
            {"output": "pairs", "paths": "all"},
            [
                (["t0 question"], "t0 best", "t0 second"),
                (["t0 question"], "t0 best", "t0 third"),
                (["t0 question", "t0 best", "t0 follow up"], "t0 good end", "t0 bad end"),
            ],
            {
                "deleted message": 1,
                "pairs: unranked reply": 1,
                "pairs: turn with fewer than 2 ranked replies": 1,  # "t0 more?"
            },
        ),
    ],
)
def test_sibling_ranks_become_pairs(
    tmp_path: Path, oasst: dict[str, Any], expected: list[Any], notes: dict[str, int]
) -> None:
    data = write_jsonl(tmp_path / "trees.jsonl", [ranked_tree(0)])
    result = build(tmp_path, [{"name": "oa", "path": str(data), "type": "oasst", "oasst": oasst}])
    rows = read_rows(result.out_dir / "train.jsonl")
    assert sorted(pair_texts(rows)) == sorted(expected)
    assert {k: v for k, v in result.report.sources["oa"].notes.items() if v} == notes
    assert rows[0]["meta"]["template"].startswith("oasst/pairs-")


def test_ties_and_identical_replies_are_counted_not_paired(tmp_path: Path) -> None:
    replies = [("same", 0), ("tied", 0), ("same", 1)]
    root = msg("q", "prompter", [msg(text, "assistant", rank=rank) for text, rank in replies])
    data = write_jsonl(tmp_path / "trees.jsonl", [{"prompt": root}, ranked_tree(1)])
    source = {"name": "oa", "path": str(data), "type": "oasst", "oasst": {"output": "pairs"}}
    result = build(tmp_path, [source])
    notes = result.report.sources["oa"].notes
    assert notes["pairs: tied with the best rank"] == 1
    assert notes["pairs: identical replies"] == 1
    assert len(read_rows(result.out_dir / "train.jsonl")) == 3  # tree 1's pairs only


def test_pair_with_needs_pairs_output() -> None:
    source = {"name": "oa", "path": "t.jsonl", "type": "oasst", "oasst": {"pair_with": "worst"}}
    with pytest.raises(ValidationError, match=r"oasst\.pair_with applies to oasst\.output: pairs"):
        Config.model_validate({"build": {"sources": [source]}})


def test_pairs_split_by_tree_read_as_preference_rows_and_train_dpo(
    tmp_path: Path, tiny_tok: Any, tiny_model_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "trees.jsonl", [ranked_tree(t) for t in range(10)])
    source = {"name": "oa", "path": str(data), "type": "oasst", "oasst": {"output": "pairs"}}
    result = build(tmp_path, [source], eval_fraction=0.3)
    train, held_out = (result.out_dir / name for name in ("train.jsonl", "eval.jsonl"))
    train_trees = {r["messages"][0]["content"].split()[0] for r in read_rows(train)}
    eval_trees = {r["messages"][0]["content"].split()[0] for r in read_rows(held_out)}
    assert len(eval_trees) == 3 and not train_trees & eval_trees

    # the rows' columns are detected as the preference format, with no format given
    data_cfg = DataConfig(
        train=[DataSource(path=str(train))], eval=[DataSource(path=str(held_out))], packing=False
    )
    prepared = prepare_pairs(data_cfg, tiny_tok)
    assert (len(prepared.train), len(prepared.eval)) == (21, 9)
    first = prepared.train[0]
    assert first.chosen_ids.tolist() != first.rejected_ids.tolist()

    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "data": data_cfg.model_dump(),
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"objective": "dpo", "max_steps": 2, "micro_batch_size": 2},
            "output_dir": str(tmp_path / "dpo"),
        }
    )
    metrics = run_train(cfg).metrics
    assert metrics["global_step"] == 2 and metrics["final_loss"] is not None


MENTION = "the transcript read\n\nHuman: hello\n\nAssistant: hi"


def test_every_built_pair_prepares_for_dpo_and_reward(
    tmp_path: Path, tiny_tok: Any, tiny_model_dir: Path
) -> None:
    """Every row `build` writes is a pair `prepare` reads for `dpo` and `reward`, including
    answers (and prompts) that quote "\\n\\nHuman: " mid-text: only a string that starts with
    the HH marker is a transcript."""
    from instructune.training.objectives import prepare_data

    trees = [ranked_tree(t) for t in range(4)]
    best = trees[0]["prompt"]["replies"][1]
    best["text"] = f"t0 best: {MENTION}"
    best["replies"][0]["replies"][1]["text"] = f"t0 bad end, {MENTION}"  # a rejected answer
    trees[1]["prompt"]["text"] = f"t1 question: {MENTION}"
    data = write_jsonl(tmp_path / "trees.jsonl", trees)
    source = {"name": "oa", "path": str(data), "type": "oasst", "oasst": {"output": "pairs"}}
    train = build(tmp_path, [source]).out_dir / "train.jsonl"
    rows = read_rows(train)
    assert (
        len(rows) == 12
        and sum(MENTION in json.dumps(r, ensure_ascii=False).replace("\\n", "\n") for r in rows)
        == 6
    )
    for objective in ("dpo", "reward"):
        cfg = Config.model_validate(
            {
                "model": {"path": str(tiny_model_dir)},
                "data": {
                    "train": [{"path": str(train)}],
                    "max_length": 256,
                },
                "train": {"objective": objective},
            }
        )
        prepared = prepare_data(cfg, tiny_tok)
        assert isinstance(prepared, PreparedPairs) and len(prepared.train) == len(rows)
        assert not prepared.dropped
        answers = [
            (
                tiny_tok.decode(p.chosen_ids[p.prompt_len :]),
                tiny_tok.decode(p.rejected_ids[p.prompt_len :]),
            )
            for p in prepared.train
        ]
        assert (f"t0 best: {MENTION}<|im_end|>\n", "t0 second<|im_end|>\n") in answers
        assert ("t0 good end<|im_end|>\n", f"t0 bad end, {MENTION}<|im_end|>\n") in answers
