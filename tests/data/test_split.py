"""Dedup and the seeded, stratified train/eval split."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from instructune.data.conversation import Conversation, DataError, Message
from instructune.data.split import dedup, train_eval_split


def conv(user: str, answer: str = "ok", label: str | None = None, source: str = "") -> Conversation:
    return Conversation(
        messages=[Message("user", user), Message("assistant", answer)],
        source=source or f"f:{user}",
        label=label,
    )


def test_dedup_keeps_first_occurrence_in_order_and_folds_whitespace() -> None:
    rows = [
        conv("a", source="1"),
        conv("b", source="2"),
        conv(" a ", source="3"),  # same text after whitespace folding
        conv("A", source="4"),  # case is kept
        conv("b", "other", source="5"),  # same prompt, different answer: not a duplicate
        conv("b", source="6"),
    ]
    kept, dropped = dedup(rows)
    assert [c.source for c in kept] == ["1", "2", "4", "5"]
    assert [c.source for c in dropped] == ["3", "6"]


def test_fraction_zero_keeps_everything() -> None:
    rows = [conv(str(i)) for i in range(5)]
    train, evaluation = train_eval_split(rows, 0.0, seed=1)
    assert train == rows and evaluation == []


def test_plain_split_is_seeded_sized_and_ordered() -> None:
    rows = [conv(str(i)) for i in range(100)]
    train, evaluation = train_eval_split(rows, 0.2, seed=7)
    assert len(evaluation) == 20 and len(train) == 80
    assert sorted(c.source for c in train + evaluation) == sorted(c.source for c in rows)
    assert [rows.index(c) for c in evaluation] == sorted(rows.index(c) for c in evaluation)
    again = train_eval_split(rows, 0.2, seed=7)
    assert again == (train, evaluation)
    assert train_eval_split(rows, 0.2, seed=8)[1] != evaluation


def test_unlabelled_row_disables_stratification() -> None:
    rows = [conv(str(i), label="x") for i in range(9)] + [conv("9")]
    _, evaluation = train_eval_split(rows, 0.5, seed=0)
    assert len(evaluation) == 5


def test_stratified_split_keeps_each_labels_share() -> None:
    labels = ["pos"] * 60 + ["neg"] * 30 + ["rare"] * 2 + ["single"]
    rows = [conv(str(i), label=label) for i, label in enumerate(labels)]
    train, evaluation = train_eval_split(rows, 0.1, seed=3)
    counts = Counter(c.label for c in evaluation)
    assert counts == Counter({"pos": 6, "neg": 3, "rare": 1})
    assert Counter(c.label for c in train) == Counter(
        {"pos": 54, "neg": 27, "rare": 1, "single": 1}
    )


def test_stratified_split_never_empties_a_label_from_train() -> None:
    rows = [conv(str(i), label=label) for i, label in enumerate(["a", "a", "b", "b", "b"])]
    train, evaluation = train_eval_split(rows, 0.9, seed=0)
    assert Counter(c.label for c in train) == Counter({"a": 1, "b": 1})
    assert Counter(c.label for c in evaluation) == Counter({"a": 1, "b": 2})


def test_split_needs_two_rows() -> None:
    with pytest.raises(DataError, match="can't hold out an eval fraction of 1 row"):
        train_eval_split([conv("a")], 0.1, seed=0)
    with pytest.raises(ValueError, match=r"eval fraction must be in \[0, 1\)"):
        train_eval_split([conv("a"), conv("b")], 1.0, seed=0)


_SCRIPT = """
from instructune.data.conversation import Conversation, Message
from instructune.data.split import train_eval_split
rows = [Conversation([Message("user", str(i)), Message("assistant", "x")], str(i),
        label="abcdefg"[i % 7]) for i in range(70)]
print([c.source for c in train_eval_split(rows, 0.2, 11)[1]])
"""


def test_split_is_identical_across_python_hash_seeds() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(src)}
        run = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
