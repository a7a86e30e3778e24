"""A conversation → the texts its trained turns are trained in, each turn after exactly the prompt
serving renders for it (`render_conversation`); `data.tokenize` turns them into tokens and labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from instructune.data.conversation import Conversation, Message
from instructune.data.templates import Template, TemplateMismatch, is_raw_conversation


@dataclass(slots=True)
class Rendered:
    """A conversation rendered in full, with each trained turn's prefix ends (in chars)."""

    conv: Conversation
    text: str
    bounds: list[tuple[int, int]]  # per trained turn: (end of generation prompt, end of turn)
    rebuilt: bool = False
    """The text is the generation prompt + the response (the template renders history otherwise)."""


_PROBE = "\x00instructune-turn\x00"


def render_conversation(
    conv: Conversation, template: Template, system_prompt: str | None, train_on_turns: str
) -> list[Rendered]:
    """Render `conv` into one or more texts whose trained turns follow exactly the prompt serving
    renders for them (string-checked; `TemplateMismatch` where no rule below applies).

    Turn i is trained in the whole conversation's render F when its generation prompt
    `P = render(messages[:i], add_generation_prompt=True)` is a prefix of the render through it
    `C = render(messages[:i+1])`, and C up to its end-of-turn token is a prefix of F. Templates
    that render history differently from the newest turn break the second condition (Qwen3 writes
    a `<think>` block only after the last user turn): such a turn is trained in its own render C,
    the text the template gives it at inference (the row is split; counted by the caller).
    Templates whose generation prompt is not how they render the turn break the first:
    DeepSeek-R1 opens `<think>\\n` in P and strips reasoning from every rendered answer;
    Mistral writes the system prompt into the last user message only when that message is the
    last one, i.e. only in P. Such a turn is trained as P + its content (less what P's tail
    already wrote of it, R1's `<think>\\n`) + the template's end-of-turn text.

    `system_prompt` is inserted when the conversation has no system message (not for `text`
    rows); each result's `conv` has it.
    """
    msgs = conv.messages
    if (
        system_prompt is not None
        and msgs
        and msgs[0].role != "system"
        and not is_raw_conversation(msgs)
    ):
        msgs = [Message("system", system_prompt), *msgs]
        conv = Conversation(msgs, conv.source, conv.label, conv.meta)
    dicts = template.message_dicts(msgs)
    meta = conv.meta or None
    turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
    if train_on_turns == "last":
        turns = turns[-1:]
    out: list[Rendered] = []
    current = Rendered(conv, template.render_dicts(dicts, False, meta), [])
    for i in reversed(turns):
        prompt = template.render_dicts(dicts[:i], True, meta)
        turn = (
            current.text
            if i + 1 == len(dicts) and not out
            else template.render_dicts(dicts[: i + 1], False, meta)
        )
        if not turn.startswith(prompt):
            out.append(_rebuilt_turn(conv, template, dicts, i, prompt, meta))
            continue
        # the whole render through the turn where it nests, else only through its end of turn
        end = len(turn) if current.text.startswith(turn) else template.turn_end(turn, len(prompt))
        if not current.text.startswith(turn[:end]):
            if current.bounds:
                out.append(current)
            part = Conversation(msgs[: i + 1], conv.source, conv.label, conv.meta)
            current = Rendered(part, turn, [])
        current.bounds.insert(0, (len(prompt), end))
    if current.bounds or not out:
        out.append(current)
    out.reverse()
    return out


def _rebuilt_turn(
    conv: Conversation,
    template: Template,
    dicts: list[dict[str, Any]],
    i: int,
    prompt: str,
    meta: Mapping[str, str] | None,
) -> Rendered:
    """Turn i as the model produces it after its generation prompt (see `render_conversation`)."""
    probe = template.render_dicts(
        [*dicts[:i], {"role": "assistant", "content": _PROBE}], False, meta
    )
    at = probe.find(_PROBE)
    # what the prompt writes of the answer's opening (R1: "<think>\n")
    k = next((j for j, (a, b) in enumerate(zip(prompt, probe, strict=False)) if a != b), at)
    tail, content = prompt[k:], dicts[i]["content"]
    if at < 0 or k > at or not tail.strip() or dicts[i].get("tool_calls"):
        # a template at odds with itself (not a convention), or tool calls this rebuild can't
        # place: never trained on a guess
        raise TemplateMismatch(
            template.name,
            conv.source,
            f"the generation prompt of message {i} is not a prefix of the conversation rendered "
            "through that turn"
            + (
                " (an answer with tool calls can't be rebuilt)"
                if dicts[i].get("tool_calls")
                else ""
            )
            + ":\n"
            + _divergence(prompt, template.render_dicts(dicts[: i + 1], False, meta)),
        )
    opening = tail.rstrip()
    if opening and content.startswith(opening):
        content = content[len(opening) :]
        rest = tail[len(opening) :]
        content = content[len(rest) :] if content.startswith(rest) else content.lstrip()
    after = probe[at + len(_PROBE) :]
    text = prompt + content + after[: template.turn_end(after, 0)]
    msgs = conv.messages[: i + 1]
    return Rendered(
        Conversation(msgs, conv.source, conv.label, conv.meta),
        text,
        [(len(prompt), len(text))],
        rebuilt=True,
    )


def _divergence(part: str, whole: str, width: int = 40) -> str:
    k = next((j for j, (a, b) in enumerate(zip(part, whole, strict=False)) if a != b), len(whole))
    lo = max(0, k - width)
    return (
        f"  prefix render diverges at char {k}: ...{part[lo : k + width]!r}\n"
        f"  full render has:                   ...{whole[lo : k + width]!r}"
    )
