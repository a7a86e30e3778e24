"""Prompt text → token ids, and the token ids a generation stops at, both from the run's template.

A prompt is `template.render(messages, add_generation_prompt=True)`, the same text training
rendered before the response it learned. Generation stops at the tokenizer's EOS or the template's
end-of-turn token (found by rendering a probe conversation, so it works for ChatML, Llama-3,
Alpaca-with-eos and custom templates alike). Evaluation's scoring and the engine share these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from instructune.data.conversation import Message

_PROBE = "\x00instructune-probe\x00"


class TemplateLike(Protocol):
    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> str: ...


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered template text: the template writes BOS itself when it wants one."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn(template: TemplateLike, tokenizer: Any) -> tuple[str, int | None]:
    """(text after an assistant message up to its end-of-turn token, that token's id).

    Rendering `[user, assistant=PROBE]` and reading what follows PROBE gives the template's own
    end of a turn, e.g. `<|im_end|>` for ChatML or `</s>` for Alpaca. The id is the first special
    token there; None when the template ends turns with plain text only.
    """
    from instructune.data.conversation import Message

    text = template.render([Message("user", "hi"), Message("assistant", _PROBE)])
    after = text[text.index(_PROBE) + len(_PROBE) :] if _PROBE in text else ""
    specials = sorted(
        (t for t in tokenizer.all_special_tokens if t and t in after),
        key=after.index,
    )
    if not specials:
        return "", None
    token = specials[0]
    return after[: after.index(token) + len(token)], int(tokenizer.convert_tokens_to_ids(token))


def stop_token_ids(template: TemplateLike, tokenizer: Any) -> list[int]:
    """EOS, the template's end-of-turn token and the known end-of-turn tokens of the vocabulary.

    The same set training's labels end at (`data.templates.end_of_turn_ids`), so a generation
    stops exactly where a trained response ends.
    """
    from instructune.data.templates import end_of_turn_ids

    ids: list[int] = []
    eos = tokenizer.eos_token_id
    first = [*(eos if isinstance(eos, list) else [eos]), end_of_turn(template, tokenizer)[1]]
    for candidate in [*first, *sorted(end_of_turn_ids(tokenizer))]:
        if candidate is not None and int(candidate) not in ids:
            ids.append(int(candidate))
    if not ids:
        raise ValueError("the tokenizer has no EOS token and the template no end-of-turn token")
    return ids
