"""The papers' filters, answer parsing, and seed files with pointed errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructune.synthesis.backends import Response
from instructune.synthesis.filters import (
    answer_failure,
    clean_instances,
    evolution_failure,
    instruction_drop_reason,
)
from instructune.synthesis.parsing import (
    input_first_instances,
    labelled_fields,
    numbered_items,
    output_first_instances,
    yes_no,
)
from instructune.synthesis.seeds import Instance, load_seeds

KEYWORDS = ["image", "draw", "go to", "plot"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Write a poem about the sea.", None),
        ("Say hi.", "too_short"),
        (" ".join(["word"] * 151), "too_long"),
        ("Describe the image of a sunset over hills.", "keyword"),
        ("Please go to the store and buy milk.", "keyword"),
        ("Explain what a plotter does in printing.", None),  # word boundary: plotter ≠ plot
        ("- List five fruits that are red.", "starts_with_punctuation"),
        ("Écris un poème sur la mer s'il te plaît.", "starts_with_non_ascii"),
        ("", "empty"),
    ],
)
def test_instruction_filters(text: str, reason: str | None) -> None:
    assert instruction_drop_reason(text, KEYWORDS, 4, 150) == reason


def test_instance_cleanup_rules() -> None:
    good = Instance("2+2", "4")
    kept, drops, task = clean_instances(
        [
            good,
            Instance("", ""),
            Instance("same", "same"),
            Instance("x", "Here is the list:"),
            good,
            Instance("3+3", "6"),
            Instance("cut", "unfini"),
        ],
        cut_by_length=True,
    )
    assert task is None
    assert kept == [good, Instance("3+3", "6")]
    assert sorted(drops) == sorted(
        [
            "cut_by_length",
            "empty_output",
            "input_equals_output",
            "output_ends_with_colon",
            "duplicate_instance",
        ]
    )
    _, _, task = clean_instances([Instance("x", "yes"), Instance("x", "no")], False)
    assert task == "conflicting_outputs"
    _, _, task = clean_instances([Instance("x", "")], False)
    assert task == "no_valid_instances"


def test_evol_elimination() -> None:
    parent = "Write a poem about the sea."
    assert evolution_failure(parent, "  write a poem about  the sea. ") == "no_information_gain"
    assert evolution_failure(parent, "#Rewritten Prompt#: a haiku") == "copies_prompt_scaffolding"
    assert evolution_failure(parent, "The given prompt asks for a poem") == (
        "copies_prompt_scaffolding"
    )
    assert evolution_failure(parent, "This adds at most 10 to 20 words.") == (
        "copies_prompt_scaffolding"
    )
    assert evolution_failure(parent, "Write a sonnet about the sea at night.") is None
    assert answer_failure(Response("Sorry, I cannot help."), 80) == "answer_says_sorry"
    long_sorry = "I am sorry to hear that. " + "Here is a long detailed answer. " * 20
    assert answer_failure(Response(long_sorry), 80) is None
    assert answer_failure(Response("It is what it is, and so on."), 80) == "answer_only_stop_words"
    assert answer_failure(Response("A full answer.", "length"), 80) == "answer_cut_by_length"
    assert answer_failure(Response("", "error", error="http_400: x"), 80) == "answer_error"


def test_parsers() -> None:
    assert numbered_items("Sure!\n9. Write a poem.\n10) **Task:** Explain gravity.\nbye") == [
        "Write a poem.",
        "Explain gravity.",
    ]
    text = "Example 1\nInput: 2+2\nOutput: 4\nExample 2\nInput: none\nOutput: hi\nthere"
    assert input_first_instances(text) == [Instance("2+2", "4"), Instance("", "hi\nthere")]
    text = "Class label: Positive\nInput: I love it\nClass label: Negative\nInput: Awful."
    assert output_first_instances(text) == [
        Instance("I love it", "Positive"),
        Instance("Awful.", "Negative"),
    ]
    fields = labelled_fields(
        "Instruction: Do X\nInput: a\nb\nConstraints: none", ("Instruction", "Input", "Constraints")
    )
    assert fields == {"instruction": "Do X", "input": "a\nb", "constraints": "none"}
    assert labelled_fields("Input: only this", ("Instruction", "Input")) is None
    assert labelled_fields("Instructions: Do Y", ("Instruction",), ("Input",)) == {
        "instruction": "Do Y",
        "input": "",
    }
    assert (yes_no(" Yes."), yes_no("no, it is not"), yes_no("maybe")) == (True, False, None)


def test_seed_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    good = {"instruction": "Do a thing well.", "instances": [{"input": "", "output": "ok"}]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"instances": []}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:3: missing field 'instruction'"):
        load_seeds(path)
    path.write_text(json.dumps({"instruction": "x", "instances": [{"input": "a"}]}) + "\n")
    with pytest.raises(ValueError, match=r"seeds.jsonl:1: instances\[0\]: missing field 'output'"):
        load_seeds(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"seeds.jsonl:1: invalid JSON"):
        load_seeds(path)
    with pytest.raises(FileNotFoundError, match=r"synthesize\.seeds"):
        load_seeds(tmp_path / "missing.jsonl")
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Add.", "input": "1 2", "output": "3"}]))
    (seed,) = load_seeds(alpaca)
    assert seed.instances == (Instance("1 2", "3"),) and seed.is_classification is None
