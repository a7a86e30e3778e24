"""Templates: alpaca's exact strings, the tokenizer's chat template, user files, the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

from instructune.data.conversation import Message
from instructune.data.templates import (
    TEMPLATES,
    TemplateError,
    is_raw_conversation,
    load_template,
    raw_template,
)

EOS = "<|im_end|>"
PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def _alpaca_row(instruction: str, inp: str, output: str) -> tuple[list[Message], dict[str, str]]:
    user = instruction + (f"\n\n{inp}" if inp else "")
    msgs = [Message("user", user), Message("assistant", output)]
    return msgs, {"instruction": instruction, "input": inp}


def test_registry_names_and_unknown_spec(tiny_tok: Any) -> None:
    assert sorted(TEMPLATES) == ["alpaca", "alpaca_nl", "chat"]
    with pytest.raises(
        TemplateError, match=r"unknown template 'vicuna'.*\['alpaca', 'alpaca_nl', 'chat'\]"
    ):
        load_template("vicuna", tiny_tok)


def test_alpaca_with_input_is_the_stanford_recipe(tiny_tok: Any) -> None:
    tmpl = load_template("alpaca", tiny_tok)
    msgs, meta = _alpaca_row("Sum the numbers.", "2, 3", "5")
    prompt = PROMPT_INPUT.format(instruction="Sum the numbers.", input="2, 3")
    assert tmpl.render(msgs[:1], add_generation_prompt=True, meta=meta) == prompt
    assert tmpl.render(msgs, meta=meta) == prompt + "5" + EOS


def test_alpaca_without_input_is_the_stanford_recipe(tiny_tok: Any) -> None:
    tmpl = load_template("alpaca", tiny_tok)
    msgs, meta = _alpaca_row("Name a color.", "", "Blue")
    prompt = PROMPT_NO_INPUT.format(instruction="Name a color.")
    assert tmpl.render(msgs[:1], add_generation_prompt=True, meta=meta) == prompt
    assert tmpl.render(msgs, meta=meta) == prompt + "Blue" + EOS
    # without meta the user turn is the instruction: same text for input-less rows
    assert tmpl.render(msgs) == prompt + "Blue" + EOS


def test_alpaca_system_replaces_preamble_and_turns_repeat(tiny_tok: Any) -> None:
    tmpl = load_template("alpaca", tiny_tok)
    msgs = [
        Message("system", "You are terse."),
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "Bye"),
        Message("assistant", "Ciao"),
    ]
    assert tmpl.render(msgs) == (
        "You are terse.\n\n### Instruction:\nHi\n\n### Response:Hello"
        + EOS
        + "\n\n### Instruction:\nBye\n\n### Response:Ciao"
        + EOS
    )


def test_alpaca_rejects_a_late_system_message(tiny_tok: Any) -> None:
    tmpl = load_template("alpaca", tiny_tok)
    with pytest.raises(jinja2.TemplateError, match="only allowed first"):
        tmpl.render([Message("user", "a"), Message("system", "b")])


@pytest.mark.parametrize("gen", [False, True])
def test_chat_is_the_tokenizers_template(tiny_tok: Any, gen: bool) -> None:
    msgs = [Message("system", "S"), Message("user", "Q"), Message("assistant", "A")]
    tmpl = load_template("chat", tiny_tok)
    want = tiny_tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in msgs],
        tokenize=False,
        add_generation_prompt=gen,
    )
    assert tmpl.name == "chat"
    assert tmpl.render(msgs, add_generation_prompt=gen) == want


def test_chat_without_template_says_what_to_use(tiny_tok: Any) -> None:
    import copy

    tok = copy.deepcopy(tiny_tok)
    tok.chat_template = None
    with pytest.raises(TemplateError, match=r"has no chat_template.*template: alpaca"):
        load_template("chat", tok)


def test_user_jinja_file_with_generation_tag(tiny_tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "mine.jinja"
    path.write_text(
        "{% for m in messages %}"
        "{% if m.role == 'assistant' %}A: {% generation %}{{ m.content + eos_token }}"
        "{% endgeneration %}\n{% else %}{{ m.role[0] | upper }}: {{ m.content }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
    )
    tmpl = load_template(str(path), tiny_tok)
    msgs = [Message("user", "hi"), Message("assistant", "yo")]
    assert tmpl.name == str(path)
    assert tmpl.render(msgs) == f"U: hi\nA: yo{EOS}"  # trim_blocks eats the "\n", as in HF
    assert tmpl.render(msgs[:1], add_generation_prompt=True) == "U: hi\nA: "
    hf = tiny_tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in msgs],
        chat_template=path.read_text(),
        tokenize=False,
    )
    assert tmpl.render(msgs) == hf


def test_missing_file_and_syntax_error(tiny_tok: Any, tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        load_template(str(tmp_path / "nope.jinja"), tiny_tok)
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}")
    with pytest.raises(TemplateError, match="syntax error"):
        load_template(str(bad), tiny_tok)


def test_templates_run_sandboxed(tiny_tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "evil.jinja"
    path.write_text("{{ messages.append(1) }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        load_template(str(path), tiny_tok).render([Message("user", "x")])


def test_raw_template_for_text_rows(tiny_tok: Any) -> None:
    msgs = [Message("assistant", "Just text.")]
    assert is_raw_conversation(msgs)
    assert not is_raw_conversation([Message("user", "q"), Message("assistant", "a")])
    tmpl = raw_template(tiny_tok)
    assert tmpl.render(msgs) == "Just text." + EOS
    assert tmpl.render([], add_generation_prompt=True) == ""
