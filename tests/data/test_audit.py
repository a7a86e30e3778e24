"""Audit: each label problem it exists for is caught, and clean data passes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instructune.config.schema import DataConfig, DataSource
from instructune.data.audit import AuditError, audit, render_example
from instructune.data.conversation import Conversation, Message
from instructune.data.examples import Example
from instructune.data.templates import load_template
from instructune.data.tokenize import encode_conversations


def _convs() -> list[Conversation]:
    return [
        Conversation([Message("user", "Say yes"), Message("assistant", "yes")], "a.jsonl:1"),
        Conversation(
            [
                Message("system", "You are a helpful assistant."),
                Message("user", "What is the capital of France?"),
                Message("assistant", "Paris"),
                Message("user", "And Germany?"),
                Message("assistant", "Berlin"),
            ],
            "a.jsonl:2",
        ),
        Conversation([Message("assistant", "The quick brown fox")], "a.jsonl:3"),
    ]


def _encode(tok: Any, template: str = "chat", **kw: Any) -> Sequence[Example]:
    cfg = DataConfig(train=[DataSource(path="x")], **kw)
    return encode_conversations(_convs(), load_template(template, tok), tok, cfg).examples


@pytest.mark.parametrize("template", ["chat", "alpaca"])
@pytest.mark.parametrize("kw", [{}, {"train_on_inputs": True}, {"train_on_turns": "last"}])
def test_clean_examples_pass(tiny_tok_pad_eos: Any, template: str, kw: dict[str, Any]) -> None:
    examples = _encode(tiny_tok_pad_eos, template, **kw)
    assert len(examples) == 3
    audit(examples, tiny_tok_pad_eos, load_template(template, tiny_tok_pad_eos))


def test_no_trained_token(tiny_tok: Any) -> None:
    ex = _encode(tiny_tok)[0]
    ex.labels[:] = -100
    with pytest.raises(AuditError, match=r"a.jsonl:1: no trained token") as err:
        audit([ex], tiny_tok, load_template("chat", tiny_tok))
    assert "<|im_start|>user\nSay yes" in str(err.value)  # the example is shown


def test_response_without_eos(tiny_tok: Any, tmp_path: Path) -> None:
    path = tmp_path / "noeos.jinja"
    path.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    cfg = DataConfig(train=[DataSource(path="x")])
    tmpl = load_template(str(path), tiny_tok)
    examples = encode_conversations(_convs()[:1], tmpl, tiny_tok, cfg).examples
    with pytest.raises(AuditError, match="does not end in an end-of-turn/eos token") as err:
        audit(examples, tiny_tok, tmpl)
    assert "[[yes\n]]" in str(err.value)


def test_eos_masked_as_padding_when_pad_is_eos(tiny_tok_pad_eos: Any) -> None:
    """A collator that masks labels by pad id erases the eos when pad == eos: caught."""
    tok = tiny_tok_pad_eos
    assert tok.pad_token_id == tok.eos_token_id
    examples = _encode(tok)
    for ex in examples:
        ex.labels[ex.input_ids == tok.pad_token_id] = -100  # the classic mistake
    with pytest.raises(AuditError, match=r"is not a label \(pad == eos") as err:
        audit(examples, tok, load_template("chat", tok))
    assert "a.jsonl:1" in str(err.value) and "2 more problems" in str(err.value)


def test_generation_prompt_differs_from_training_prefix(tiny_tok: Any, tmp_path: Path) -> None:
    """Trained with one template, served with another whose prompt differs: caught."""
    examples = _encode(tiny_tok)
    served = tmp_path / "served.jinja"
    served.write_text(
        load_template("chat", tiny_tok).source_text.replace(
            "'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n\\n'"
        )
    )
    served_template = load_template(str(served), tiny_tok)
    with pytest.raises(AuditError, match="generation prompt of trained response 0"):
        audit(examples, tiny_tok, served_template, prompt_checks=None)
    with pytest.raises(AuditError, match="generation prompt"):
        audit(examples, tiny_tok, served_template, prompt_checks=1)  # a spread sample
    audit(examples, tiny_tok, served_template, prompt_checks=0)  # label checks only


def test_render_example_marks_trained_spans(tiny_tok: Any) -> None:
    ex = _encode(tiny_tok)[1]
    shown = render_example(ex, tiny_tok)
    assert shown.startswith("--- a.jsonl:2 (")
    assert "[[Paris<|im_end|>]]\n<|im_start|>user" in shown
    assert "[[Berlin<|im_end|>]]\n" in shown
    assert shown.count("[[") == 2
    long = Example(np.tile(ex.input_ids, 50), np.tile(ex.labels, 50), "long")
    assert "[... cut ...]" in render_example(long, tiny_tok, max_chars=500)
