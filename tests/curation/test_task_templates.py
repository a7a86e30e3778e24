"""Templates three ways (config/YAML list, promptsource, FLAN JSON), built-ins, validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from instructune.config.build import BuildSource
from instructune.curation.builtin import BUILTIN_SETS
from instructune.curation.task_templates import flan_to_jinja, load_templates
from instructune.data.templates import TemplateError

from .helpers import build, read_rows, sentences, table_source, write_csv, write_jsonl

FLAN = {
    "toy_sentiment": [
        ["Review: {sentence}\nIs it positive or negative?\n{options_}", "{answer}"],
        ["{sentence}\nHow does the critic feel? {{not jinja}}\n\n{options_}", "{answer}"],
        ["Write a {answer} review.", "{sentence}"],
    ],
    "other_task": [["{question}", "{answer}"]],
}


def write_flan(tmp_path: Path) -> Path:
    path = tmp_path / "flan.json"
    path.write_text(json.dumps(FLAN), encoding="utf-8")
    return path


def test_flan_templates_render_with_options_and_detect_inversions(tmp_path: Path) -> None:
    data = write_csv(
        tmp_path / "d.csv", [{"sentence": r["text"], "label": r["label"]} for r in sentences(30)]
    )
    flan = {"flan": str(write_flan(tmp_path)), "task": "toy_sentiment"}
    source = table_source(data, templates=flan, inversions=0.3)
    templates = load_templates(BuildSource.model_validate(source))
    assert [t.inverted for t in templates] == [False, False, True]
    result = build(tmp_path, [source])
    rows = read_rows(result.out_dir / "train.jsonl")
    assert len(rows) == 30
    regular = [r for r in rows if not r["meta"]["inverted"]]
    inverted = [r for r in rows if r["meta"]["inverted"]]
    assert regular and inverted
    for row in regular:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert "OPTIONS:\n- positive\n- negative" in user
        assert answer == {"pos": "positive", "neg": "negative"}[row["meta"]["label"]]
    # FLAN literal braces stay text; the inversion's target is the sentence itself
    second = [r for r in regular if r["meta"]["template"] == "toy_sentiment/1"]
    assert second and all("{{not jinja}}" in r["messages"][0]["content"] for r in second)
    row = inverted[0]
    assert row["messages"][1]["content"].startswith("row")
    assert row["messages"][0]["content"] in ("Write a positive review.", "Write a negative review.")


def test_flan_literal_text_is_never_jinja() -> None:
    assert flan_to_jinja("{a} says {{ b }} and {% x %}") == (
        '{{ a }}{{ " says {{ b }} and {% x %}" }}'
    )


def test_unknown_flan_task_names_close_matches_and_the_file(tmp_path: Path) -> None:
    source = table_source(
        tmp_path / "d.csv", templates={"flan": str(write_flan(tmp_path)), "task": "toy_sentimnt"}
    )
    with pytest.raises(
        TemplateError, match=r"unknown FLAN task 'toy_sentimnt'.*did you mean toy_sentiment"
    ):
        load_templates(BuildSource.model_validate(source))


def test_flan_file_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    flan = tmp_path / "flan.json"
    flan.write_text('{"toy": [\n  ["{a}", "{b}"],\n  oops\n]}', encoding="utf-8")
    source = table_source(tmp_path / "d.csv", templates={"flan": str(flan), "task": "toy"})
    expected = rf"^{re.escape(str(flan))}:3: invalid JSON \(Expecting value\)$"
    with pytest.raises(TemplateError, match=expected):
        load_templates(BuildSource.model_validate(source))


def test_promptsource_templates_split_on_bars_and_index_answer_choices(tmp_path: Path) -> None:
    rows = [{"text": f"item {i} is here", "label": str(i % 2)} for i in range(6)]
    data = write_csv(tmp_path / "d.csv", rows)
    source = {
        "name": "ps",
        "path": str(data),
        "label": "label",
        "templates": [
            {
                "jinja": "{{ text }} Yes or no? ||| {{ answer_choices[label] }}",
                "answer_choices": "No ||| Yes",
            }
        ],
    }
    out = read_rows(build(tmp_path, [source]).out_dir / "train.jsonl")
    by_text = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in out}
    assert by_text["item 0 is here Yes or no?"] == "No"
    assert by_text["item 1 is here Yes or no?"] == "Yes"


def test_yaml_template_file_and_data_placeholders_stay_literal(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        '- {id: y0, prompt: "Q: {{ question }}", target: "{{ answer }}"}\n', encoding="utf-8"
    )
    rows = [{"question": "what is {{ 7 * 7 }} and {answer}?", "answer": "{% raw %}x"}]
    rows.append({"question": "plain question here", "answer": "yes"})
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    source = {"name": "q", "path": str(data), "templates": str(tmp_path / "t.yaml")}
    out = read_rows(build(tmp_path, [source]).out_dir / "train.jsonl")
    contents = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in out}
    assert contents["Q: what is {{ 7 * 7 }} and {answer}?"] == "{% raw %}x"


@pytest.mark.parametrize("name", sorted(BUILTIN_SETS))
def test_builtin_sets_render(tmp_path: Path, name: str) -> None:
    columns = {
        "binary": {"text": "a text to classify here"},
        "multiclass": {"text": "a text to classify here"},
        "nli": {"premise": "the sky is blue today", "hypothesis": "it is sunny"},
        "extractive_qa": {"context": "Paris is in France.", "question": "Where is Paris?"},
        "summarization": {"document": "a long document body", "summary": "short"},
    }[name]
    labelled = name in ("binary", "multiclass", "nli")
    rows = [
        {
            **{k: f"{v} {i}" for k, v in columns.items()},
            **({"label": "a"} if labelled else {"answer": f"ans {i}"}),
        }
        for i in range(8)
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    source = {"name": name, "path": str(data), "templates": name, "inversions": 0.5}
    if labelled:
        source.update(label="label", options={"a": "first", "b": "second"})
    out = read_rows(build(tmp_path, [source]).out_dir / "train.jsonl")
    assert len(out) == 8
    assert {r["meta"]["inverted"] for r in out} == {True, False}
    assert all(m["content"].strip() for r in out for m in r["messages"])


def test_missing_column_names_template_column_and_row(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", [{"sentence": "x y z", "label": "pos"}])
    with pytest.raises(TemplateError) as err:
        build(tmp_path, [table_source(data)])
    message = str(err.value)
    assert "template 't0'" in message and "column 'text'" in message and "d.csv:line 2" in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_label_missing_from_options_names_label_and_row(tmp_path: Path) -> None:
    rows = [*sentences(4), {"text": "row9 an odd one", "label": "meh"}]
    data = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(
        ValueError, match=r"d.csv:line 6: label not in options: label 'meh'.*template 't0'"
    ):
        build(tmp_path, [table_source(data)])
    assert not (tmp_path / "out").exists()


def test_empty_render_is_an_error_naming_template(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", [{"text": "  ", "label": "pos"}, *sentences(3)])
    source = table_source(
        data, templates=[{"id": "bare", "prompt": "{{ text }}", "target": "{{ answer }}"}]
    )
    with pytest.raises(ValueError, match=r"d.csv:line 2: empty prompt: template 'bare'"):
        build(tmp_path, [source])


def test_template_needs_prompt_and_target_or_jinja(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either `prompt` and `target`, or `jinja`"):
        BuildSource.model_validate(table_source(tmp_path / "d.csv", templates=[{"prompt": "x"}]))
