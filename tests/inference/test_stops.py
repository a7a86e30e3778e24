"""Where a generation stops: EOS, the template's end-of-turn token (found by a probe render)."""

from __future__ import annotations

from typing import Any

import pytest

from instructune.data.conversation import Message
from instructune.data.templates import load_template
from instructune.inference.stops import encode_text, end_of_turn, stop_token_ids


def test_stop_ids_include_eos_and_end_of_turn(tiny_tok: Any) -> None:
    chat = load_template("chat", tiny_tok)
    im_end = tiny_tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn(chat, tiny_tok) == ("<|im_end|>", im_end)
    assert im_end in stop_token_ids(chat, tiny_tok)
    assert tiny_tok.eos_token_id in stop_token_ids(load_template("alpaca", tiny_tok), tiny_tok)


def test_plain_text_turn_ends_have_no_token(tiny_tok: Any) -> None:
    class Plain:
        def render(
            self, messages: Any, add_generation_prompt: bool = False, meta: Any = None
        ) -> str:
            return "".join(f"{m.role}: {m.content}\n" for m in messages)

    assert end_of_turn(Plain(), tiny_tok) == ("", None)
    assert stop_token_ids(Plain(), tiny_tok)[0] == tiny_tok.eos_token_id


def test_no_eos_and_no_end_of_turn_is_an_error(
    tiny_tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import instructune.data.templates as templates

    class Plain:
        def render(
            self, messages: Any, add_generation_prompt: bool = False, meta: Any = None
        ) -> str:
            return "".join(m.content for m in messages)

    class NoEos:
        eos_token_id = None
        all_special_tokens = ()

    monkeypatch.setattr(templates, "end_of_turn_ids", lambda tok: set())
    with pytest.raises(ValueError, match="no EOS token and the template no end-of-turn token"):
        stop_token_ids(Plain(), NoEos())


def test_encode_text_adds_no_special_tokens(tiny_tok: Any) -> None:
    chat = load_template("chat", tiny_tok)
    text = chat.render([Message("user", "hi")], add_generation_prompt=True)
    assert encode_text(tiny_tok, text) == tiny_tok(text, add_special_tokens=False)["input_ids"]
    assert tiny_tok.decode(encode_text(tiny_tok, text)) == text
