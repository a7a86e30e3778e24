"""Templates that render history differently from the newest turn (the real ones are checked in
`tests/families`): each turn is trained in the context serving gives it, counted, never mis-masked.
These small templates reproduce each convention on the tiny tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.conversation import Conversation, Message
from instructune.data.templates import load_template
from instructune.data.tokenize import encode_conversations
from instructune.models.labels import IGNORE_INDEX

_TURN = "'<|im_start|>' + m.role + '\\n' + {} + '<|im_end|>\\n'"
# Qwen3's rule, reduced: reasoning (`<think>` in the answer) is kept only after the last user turn
STRIPS_HISTORY = (
    "{% set ns = namespace(last=0) %}{% for m in messages %}"
    "{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m.role == 'assistant' and loop.index0 < ns.last %}"
    "{{ " + _TURN.format("m.content.split('</think>')[-1]") + " }}"
    "{% else %}{{ " + _TURN.format("m.content") + " }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# DeepSeek-R1's rule, reduced: the prompt opens the reasoning, answers are rendered without it
OPENS_REASONING = (
    "{% for m in messages %}{% if m.role == 'assistant' %}"
    "{{ " + _TURN.format("m.content.split('</think>')[-1]") + " }}"
    "{% else %}{{ " + _TURN.format("m.content") + " }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
# Gemma 2's rule: no system role at all
NO_SYSTEM = (
    "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}{{ " + _TURN.format("m.content") + " }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Phi-3.5's rule: eos after the last turn only
EOS_AT_END = (
    "{% for m in messages %}{{ " + _TURN.format("m.content") + " }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% else %}{{ eos_token }}{% endif %}"
)

REASONED = [
    Message("user", "Is 7 prime?"),
    Message("assistant", "<think>\nno divisor\n</think>\n\nYes."),
    Message("user", "Is 9 prime?"),
    Message("assistant", "<think>\n3 times 3\n</think>\n\nNo."),
]


def _encode(tok: Any, tmp_path: Path, source: str, msgs: list[Message]) -> Any:
    path = tmp_path / "t.jinja"
    path.write_text(source, encoding="utf-8")
    cfg = DataConfig.model_validate({"train": [{"path": "x.jsonl"}], "template": str(path)})
    template = load_template(str(path), tok)
    return encode_conversations([Conversation(msgs, "x.jsonl:line 1")], template, tok, cfg)


def _trained(tok: Any, result: Any) -> list[str]:
    out = []
    for ex in result.examples:
        mask = np.concatenate([[0], (ex.labels != IGNORE_INDEX).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(mask))
        out += [
            tok.decode(ex.input_ids[lo:hi].tolist())
            for lo, hi in zip(edges[::2], edges[1::2], strict=True)
        ]
    return out


def test_history_stripping_template_trains_each_turn_in_its_own_render(
    tiny_tok: Any, tmp_path: Path
) -> None:
    result = _encode(tiny_tok, tmp_path, STRIPS_HISTORY, REASONED)
    # both answers with their reasoning, as each was the newest turn at inference
    assert _trained(tiny_tok, result) == [
        "<think>\nno divisor\n</think>\n\nYes.<|im_end|>",
        "<think>\n3 times 3\n</think>\n\nNo.<|im_end|>",
    ]
    assert len(result.examples) == 2
    assert result.template_splits == {"split_rows": 1, "extra_examples": 1}


def test_reasoning_opening_prompt_is_continued_not_repeated(tiny_tok: Any, tmp_path: Path) -> None:
    result = _encode(tiny_tok, tmp_path, OPENS_REASONING, REASONED)
    assert _trained(tiny_tok, result) == [
        "no divisor\n</think>\n\nYes.<|im_end|>",
        "3 times 3\n</think>\n\nNo.<|im_end|>",
    ]
    for ex in result.examples:  # after exactly the prompt serving sends
        text = tiny_tok.decode(ex.input_ids.tolist())
        assert text.count("<|im_start|>assistant\n<think>\n") == 1
    assert result.template_splits == {"split_rows": 1, "extra_examples": 1, "rebuilt_turns": 2}


def test_system_message_goes_to_the_first_user_turn_where_the_template_has_no_system_role(
    tiny_tok: Any, tmp_path: Path
) -> None:
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello.")]
    result = _encode(tiny_tok, tmp_path, NO_SYSTEM, msgs)
    (ex,) = result.examples
    assert tiny_tok.decode(ex.input_ids.tolist()).startswith("<|im_start|>user\nBe brief.\n\nHi")
    assert _trained(tiny_tok, result) == ["Hello.<|im_end|>"]


def test_eos_after_the_last_turn_only_splits_nothing(tiny_tok: Any, tmp_path: Path) -> None:
    msgs = [
        Message("user", "Is 7 prime?"),
        Message("assistant", "Yes."),
        Message("user", "And 9?"),
        Message("assistant", "No."),
    ]
    result = _encode(tiny_tok, tmp_path, EOS_AT_END, msgs)
    assert _trained(tiny_tok, result) == ["Yes.<|im_end|>", "No.<|im_end|>"]
    assert len(result.examples) == 1 and not result.template_splits
