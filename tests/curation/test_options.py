"""OPTIONS: FLAN's fixed clause, seeded varied styles (letters become the target), none."""

from __future__ import annotations

import random
from pathlib import Path

from instructune.curation.options import HEADERS, render_options

from .helpers import build, read_rows, sentences, table_source, write_csv


def test_fixed_clause_is_flans() -> None:
    clause = render_options(["yes", "no"], "fixed", 0.0, random.Random(0))
    assert clause.text == "OPTIONS:\n- yes\n- no"
    assert clause.letters is None


def test_varied_is_seeded_and_uses_several_headers() -> None:
    clauses = [render_options(["a1", "b2"], "varied", 0.0, random.Random(i)) for i in range(60)]
    again = [render_options(["a1", "b2"], "varied", 0.0, random.Random(i)) for i in range(60)]
    assert clauses == again
    headers = {c.text.split("\n")[0] for c in clauses}
    assert len(headers) > 3 and headers <= set(HEADERS)
    lettered = [c for c in clauses if c.letters]
    assert lettered and any(
        c.text.endswith(("(B) b2", "B. b2", "(b) b2", "b) b2")) for c in lettered
    )


def test_varied_lettered_rows_answer_with_the_letter_and_a_share_has_no_options(
    tmp_path: Path,
) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(200))
    source = table_source(data)
    result = build(tmp_path, [source], options={"style": "varied", "without": 0.25})
    rows = [r for r in read_rows(result.out_dir / "train.jsonl") if not r["meta"]["inverted"]]
    letters = [r for r in rows if r["messages"][1]["content"] in ("A", "B", "a", "b")]
    assert letters
    for row in letters:
        index = ["pos", "neg"].index(row["meta"]["label"])
        assert row["messages"][1]["content"].upper() == "AB"[index]
        assert row["messages"][1]["content"] in row["messages"][0]["content"]
    without = [r for r in rows if "positive" not in r["messages"][0]["content"]]
    assert 0.1 < len(without) / len(rows) < 0.4
    assert all(r["messages"][1]["content"] in ("positive", "negative") for r in without)
