"""Exact dedup, MinHash near-duplicates, decontamination, length filters."""

from __future__ import annotations

import json
import random
from pathlib import Path

from instructune.curation.minhash import lsh_params, near_duplicates

from .helpers import build, read_rows, sentences, table_source, write_csv, write_jsonl

WORDS = [f"w{i}" for i in range(3000)]


def random_text(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.randrange(len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(w.upper() if rng.random() < 0.1 else w for w in words)


def test_minhash_finds_planted_near_duplicates_and_keeps_the_first() -> None:
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(400)]
    planted = {400 + k: k * 7 for k in range(40)}  # copy index → original index
    texts += [perturb(texts[original], rng) for original in planted.values()]
    found = near_duplicates(texts, 0.7).removed()
    assert found == planted


def test_minhash_short_texts_and_empty_texts() -> None:
    found = near_duplicates(["a b", "A  b", "a c", "", ""], 0.7)
    assert found.clusters == [[0, 1]]


def test_lsh_params() -> None:
    assert lsh_params(0.7, 256, 0.5) == (25, 10)  # datasketch's choice for equal weights
    bands, rows = lsh_params(0.7, 256)  # misses weigh more: more, shorter bands
    assert bands * rows <= 256 and bands > 25 and rows < 10


def test_build_reports_exact_and_near_duplicate_clusters(tmp_path: Path) -> None:
    rows = sentences(30)
    long = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun"
    rows += [
        {"text": rows[3]["text"].upper(), "label": "pos"},  # exact after normalization
        {"text": long + " all day", "label": "neg"},
        {"text": long + " all day long", "label": "neg"},  # near duplicate of the one before
    ]
    data = write_csv(tmp_path / "d.csv", rows)
    result = build(tmp_path, [table_source(data)], dedup={"exact": True, "near": 0.7})
    report = json.loads((result.out_dir / "build_report.json").read_text())
    assert report["sources"]["toy"]["removed"] == {"exact duplicate": 1, "near duplicate": 1}
    assert report["removed"]["exact duplicate"][0]["matched"] == f"{data}:line 5"
    cluster = report["near_duplicate_clusters"][0]
    assert cluster == {
        "kept": f"{data}:line 33",
        "removed": [f"{data}:line 34"],
        "example": long + " all day",
    }
    assert result.train_rows == 31


def test_decontamination_finds_planted_rows_and_names_the_eval_text(tmp_path: Path) -> None:
    rows = sentences(20)
    long_eval = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    rows[4]["text"] = f"prefix words {long_eval.upper()} trailing"  # 13-gram match, case folded
    rows[9]["text"] = "a short held out sentence appears inside this row"  # whole-text match
    data = write_csv(tmp_path / "d.csv", rows)
    eval_file = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"instruction": "classify", "input": long_eval, "output": "positive"},
            {"instruction": "classify", "input": "short held out sentence", "output": "neg"},
            {"instruction": "x", "input": "day", "output": "the"},  # under min_words: ignored
        ],
    )
    result = build(tmp_path, [table_source(data)], decontaminate={"against": [str(eval_file)]})
    removed = json.loads((result.out_dir / "build_report.json").read_text())["removed"][
        "contaminated"
    ]
    assert [(r["row"], r["matched"]) for r in removed] == [
        (f"{data}:line 6", f"{eval_file}:line 1 field 'input'"),
        (f"{data}:line 11", f"{eval_file}:line 2 field 'input'"),
    ]
    assert removed[1]["detail"] == "short held out sentence"
    assert result.train_rows == 18
    assert "contaminated" in (result.out_dir / "build_report.md").read_text()


def test_length_filters_count_what_they_drop(tmp_path: Path) -> None:
    rows = [*sentences(6), {"text": "tiny", "label": "pos"}]
    data = write_csv(tmp_path / "d.csv", rows)
    templates = [{"id": "s", "prompt": "{{ text }}", "target": "{{ answer }}"}]
    result = build(
        tmp_path, [table_source(data, templates=templates)], lengths={"min_prompt_words": 3}
    )
    assert result.report.sources["toy"].removed == {"prompt under 3 words": 1}
    assert all(
        "tiny" not in r["messages"][0]["content"] for r in read_rows(result.out_dir / "train.jsonl")
    )


def test_decontamination_counts_user_turns_of_messages_eval_files(tmp_path: Path) -> None:
    rows = sentences(6)
    data = write_csv(tmp_path / "d.csv", rows)
    turns = [{"role": "user", "content": rows[2]["text"]}, {"role": "assistant", "content": "pos"}]
    eval_file = write_jsonl(tmp_path / "e.jsonl", [{"messages": turns}])
    result = build(tmp_path, [table_source(data)], decontaminate={"against": [str(eval_file)]})
    assert result.report.sources["toy"].removed == {"contaminated": 1}
    assert result.report.removed[0].matched == f"{eval_file}:line 1 messages[1]"
