"""The build end to end: reproducibility, no eval leakage, few-shot, outputs, errors, prepare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instructune.config import Config, DataConfig
from instructune.data.pipeline import load_sources, prepare_dataset

from .helpers import build, read_rows, sentences, table_source, write_csv

OUTPUTS = ("train.jsonl", "eval.jsonl", "build_report.json", "build_report.md")


def test_same_config_and_seed_give_identical_bytes(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(80))
    source = table_source(data, shots=[0, 2], inversions=0.2)
    opts: dict[str, Any] = {"eval_fraction": 0.2, "options": {"style": "varied", "without": 0.1}}
    one = build(tmp_path, [source], "a", **opts).out_dir
    two = build(tmp_path, [source], "b", **opts).out_dir
    for name in OUTPUTS:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    three = build(tmp_path, [source], "c", seed=1, **opts).out_dir
    assert (one / "train.jsonl").read_bytes() != (three / "train.jsonl").read_bytes()


def test_no_eval_row_text_anywhere_in_train(tmp_path: Path) -> None:
    # Every row has a unique token; with 4 exemplars per row drawn from the whole table, some
    # eval row would land in a train prompt with near certainty.
    data = write_csv(tmp_path / "d.csv", sentences(60))
    result = build(tmp_path, [table_source(data, shots=[4])], eval_fraction=0.25)
    train = (result.out_dir / "train.jsonl").read_text()
    evaluation = read_rows(result.out_dir / "eval.jsonl")
    assert len(evaluation) == 16  # 25% of each label's 30 rows, rounded
    for row in evaluation:
        token = f"row{row['meta']['index']} "  # the sentence's own unique token
        assert token in row["messages"][0]["content"] + row["messages"][1]["content"]
        assert token not in train
    shots = [r["meta"]["shots"] for r in read_rows(result.out_dir / "train.jsonl")]
    assert set(shots) == {4}


def test_exemplars_precede_the_prompt_with_delimiters_and_fit_the_budget(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(30))
    source = table_source(
        data,
        shots=[3],
        templates=[{"id": "s", "prompt": "Say: {{ text }}", "target": "{{ answer }}"}],
    )
    fewshot = {"example_delimiter": "\n###\n", "answer_delimiter": " => ", "max_length": 60}
    result = build(tmp_path, [source], fewshot=fewshot)
    rows = read_rows(result.out_dir / "train.jsonl")
    for row in rows:
        prompt, target = row["messages"][0]["content"], row["messages"][1]["content"]
        parts = prompt.split("\n###\n")
        assert len(parts) == row["meta"]["shots"] + 1
        assert all(" => " in p for p in parts[:-1]) and " => " not in parts[-1]
        assert len(prompt.split()) + len(target.split()) <= 60
        own = parts[-1].split()[1]
        assert all(not p.startswith(f"Say: {own} ") for p in parts[:-1])  # never the row itself
    assert {r["meta"]["shots"] for r in rows} == {2}  # 3 exemplars don't fit 60 words: one dropped
    report = json.loads((result.out_dir / "build_report.json").read_text())
    assert any("whitespace-separated words" in n for n in report["notes"])


def test_meta_report_and_manifest_lineage(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(20))
    result = build(tmp_path, [table_source(data)], eval_fraction=0.2)
    row = read_rows(result.out_dir / "train.jsonl")[0]
    assert set(row["meta"]) == {"source", "template", "shots", "inverted", "label", "row", "index"}
    assert row["meta"]["row"].startswith(f"{data}:line ")
    report = json.loads((result.out_dir / "build_report.json").read_text())
    stats = report["sources"]["toy"]
    assert stats["rows_in"] == 20 and stats["train_rows"] == 16 and stats["eval_rows"] == 4
    assert stats["label_balance"] == {"neg": 8, "pos": 8}
    assert report["mixture"][0]["realised"] == 16
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert str(data) in lineage["inputs"] and "toy" in lineage["templates"]
    assert set(lineage["outputs"]) == set(OUTPUTS)
    assert manifest["command"] == "build" and manifest["seed"] == {"build": 0}


def test_skip_counts_rows_by_reason(tmp_path: Path) -> None:
    rows = [
        *sentences(10),
        {"text": "row99 odd", "label": "meh"},
        {"text": "row98 empty", "label": ""},
    ]
    data = write_csv(tmp_path / "d.csv", rows)
    result = build(tmp_path, [table_source(data)], on_error="skip")
    stats = result.report.sources["toy"]
    assert stats.skipped == {"label not in options": 1, "missing label": 1}
    assert result.train_rows == 10
    assert "label not in options: 1" in (result.out_dir / "build_report.md").read_text()


def test_empty_source_and_zero_cap_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"source 'toy' \(.*empty.csv\): no usable rows"):
        build(tmp_path, [table_source(empty)])
    with pytest.raises(ValueError, match="max_examples: 0 would drop the whole source"):
        build(tmp_path, [table_source(empty, max_examples=0)])


def test_prepare_reads_the_output_unchanged_with_labels(tmp_path: Path, tiny_tok: Any) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(12))
    result = build(tmp_path, [table_source(data, shots=[0, 1])])
    cfg = DataConfig.model_validate(
        {
            "train": [{"path": str(result.out_dir / "train.jsonl"), "format": "messages"}],
            "packing": False,
        }
    )
    prepared = prepare_dataset(cfg, tiny_tok)
    assert len(prepared.train) == 12
    assert prepared.sources[0].kept == 12 and prepared.sources[0].dropped == {}
    conversations, _ = load_sources(cfg.train, cfg)
    assert sorted({c.label for c in conversations}) == ["neg", "pos"]  # from meta.label


def test_cli_build_writes_outputs(tmp_path: Path) -> None:
    from instructune.cli.main import main

    data = write_csv(tmp_path / "d.csv", sentences(10))
    config = {"build": {"sources": [table_source(data)]}, "output_dir": str(tmp_path / "cli")}
    path = tmp_path / "build.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert main(["build", str(path)]) == 0
    assert (tmp_path / "cli" / "train.jsonl").is_file()
    assert Config.model_validate(config).build is not None


def test_rationale_column_renders_chain_of_thought_targets(tmp_path: Path) -> None:
    rows = [
        {**r, "why": f"because of reason {i}" if i % 3 else ""} for i, r in enumerate(sentences(9))
    ]
    data = write_csv(tmp_path / "d.csv", rows)
    templates = [{"id": "s", "prompt": "{{ text }}\n{{ options_ }}", "target": "{{ answer }}"}]
    result = build(tmp_path, [table_source(data, templates=templates, rationale="why")])
    targets = {
        r["meta"]["index"]: r["messages"][1]["content"]
        for r in read_rows(result.out_dir / "train.jsonl")
    }
    assert targets[1] == "because of reason 1\nSo the final answer is negative."
    assert targets[3] == "negative"  # an empty rationale: the plain answer


def test_fewshot_budget_counts_tokens_of_the_configured_model(
    tmp_path: Path, tiny_model_dir: Path, tiny_tok: Any
) -> None:
    data = write_csv(tmp_path / "d.csv", sentences(20))
    source = table_source(
        data, shots=[3], templates=[{"id": "s", "prompt": "{{ text }}", "target": "{{ answer }}"}]
    )
    budget = 120
    cfg = Config.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "build": {"sources": [source], "fewshot": {"max_length": budget}},
            "output_dir": str(tmp_path / "tok"),
        }
    )
    from instructune.curation.build import run_build

    result = run_build(cfg)
    rows = read_rows(result.out_dir / "train.jsonl")
    for row in rows:
        prompt, target = (m["content"] for m in row["messages"])
        used = len(tiny_tok(prompt, add_special_tokens=False)["input_ids"])
        assert (
            used + len(tiny_tok(target, add_special_tokens=False)["input_ids"]) <= budget
            or row["meta"]["shots"] == 0
        )
    assert min(r["meta"]["shots"] for r in rows) < 3  # exemplars were dropped to fit
    assert any("tokens of" in n for n in result.report.notes)


def test_validate_accepts_a_build_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from instructune.cli.main import main

    path = tmp_path / "b.yaml"
    path.write_text(
        json.dumps({"build": {"sources": [table_source(tmp_path / "d.csv", shots=[0, 5])]}})
    )
    assert main(["validate", str(path)]) == 0
    assert "shots" in capsys.readouterr().out
    path.write_text(
        json.dumps({"build": {"sources": [table_source(tmp_path / "d.csv", shot=[1])]}})
    )
    assert main(["validate", str(path)]) == 2
    assert "unknown key; did you mean 'shots'?" in capsys.readouterr().err


def test_cli_bad_input_is_one_line_naming_template_column_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from instructune.cli.main import main

    data = write_csv(tmp_path / "d.csv", [{"sentence": "x", "label": "pos"}])
    path = tmp_path / "b.yaml"
    path.write_text(
        json.dumps({"build": {"sources": [table_source(data)]}, "output_dir": str(tmp_path / "o")})
    )
    assert main(["build", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: template 't0' of source 'toy' uses {{ text }}, column 'text'")
    assert "d.csv:line 2" in err and len(err.strip().splitlines()) == 1
