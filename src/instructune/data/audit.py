"""Label audit: stop before training when labels would teach the wrong thing.

Checks every example for: no trained token; a trained response that doesn't end in the
end-of-turn/eos token; that end-of-turn token masked out of the labels (what a collator masking by
pad id does when pad == eos, as with SmolLM2); and a generation prompt, rendered and tokenized the
way serving will, that is not exactly the token prefix the response was trained after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from instructune.data.examples import Block, Example, Examples
from instructune.data.templates import (
    Template,
    end_of_turn_ids,
    is_raw_conversation,
    raw_template,
)
from instructune.models.labels import IGNORE_INDEX

_SHOWN_PROBLEMS = 5


class AuditError(ValueError):
    """Labels that would train the wrong thing; the message shows the offending example."""


def render_example(example: Example, tokenizer: Any, max_chars: int = 4000) -> str:
    """The example's text with trained spans marked `[[...]]` (decoded run by run)."""
    ids = example.input_ids
    trained = example.labels != IGNORE_INDEX
    cuts = np.flatnonzero(np.diff(trained.astype(np.int8))) + 1
    parts = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ids)], strict=True):
        text = tokenizer.decode(ids[lo:hi].tolist(), skip_special_tokens=False)
        parts.append(f"[[{text}]]" if trained[lo] else text)
    out = "".join(parts)
    if len(out) > max_chars:
        out = out[: max_chars // 2] + "\n[... cut ...]\n" + out[-max_chars // 2 :]
    return f"--- {example.source} ({len(ids)} tokens, {int(trained.sum())} trained) ---\n{out}"


def audit(
    examples: Sequence[Example],
    tokenizer: Any,
    template: Template,
    prompt_checks: int | None = 1000,
) -> None:
    """Raise `AuditError` naming and rendering the first bad example (and counting the rest).

    Label checks run on every example, with numpy over the flat blocks of an `Examples` store.
    The generation-prompt check tokenizes prompts in full, as costly as encoding itself, so it
    runs on `prompt_checks` of the examples that kept their conversation, spread evenly (None:
    all): `encode_conversations` already guarantees the property for every kept example, and this
    is an independent re-check of that guarantee, with a different tokenization path.
    """
    eot_ids = end_of_turn_ids(tokenizer)
    eot = np.zeros(max(len(tokenizer), 1 + max(eot_ids, default=0)), bool)
    eot[list(eot_ids)] = True
    pad_is_eos = tokenizer.pad_token_id in eot_ids
    problems = [(examples[i], p) for i, p in _label_problems(examples, eot, pad_is_eos)]
    if isinstance(examples, Examples):
        checkable = examples.conversation_indices()
    else:
        checkable = [i for i, ex in enumerate(examples) if ex.conversation is not None]
    if prompt_checks is not None and len(checkable) > prompt_checks:
        picks = np.unique(np.linspace(0, len(checkable) - 1, prompt_checks).astype(np.int64))
        checkable = [checkable[i] for i in picks.tolist()]
    problems += _prompt_problems([examples[i] for i in checkable], tokenizer, template)
    if problems:
        ex, problem = problems[0]
        more = f"\n({len(problems) - 1} more problems)" if len(problems) > 1 else ""
        listed = "\n".join(f"  {e.source}: {p}" for e, p in problems[1:_SHOWN_PROBLEMS])
        raise AuditError(
            f"label audit failed at {ex.source}: {problem}\n{render_example(ex, tokenizer)}"
            + (f"\nother problems:\n{listed}" if listed else "")
            + more
            + "\nSet `data.audit: false` only if you know these labels are what you want."
        )


def _label_problems(
    examples: Sequence[Example], eot: np.ndarray, pad_is_eos: bool
) -> list[tuple[int, str]]:
    """(index, problem) of each example with a label problem, its first one; numpy over blocks."""
    blocks = examples.blocks if isinstance(examples, Examples) else [_as_block(examples)]
    out: list[tuple[int, str]] = []
    base = 0
    for block in blocks:
        trained = np.zeros(len(block.labels) + 1, np.int64)
        np.cumsum(block.labels != IGNORE_INDEX, out=trained[1:])
        untrained = trained[block.starts[1:]] == trained[block.starts[:-1]]
        spans, owner = block.abs_spans()
        last_at = spans[:, 1] - 1
        last = block.ids[last_at]
        no_eot = ~eot[last]
        unlabeled = block.labels[last_at] != last
        bad = np.flatnonzero((no_eot | unlabeled) & ~untrained[owner])
        first = {}  # the first bad span of each example
        for k in bad[::-1].tolist():
            first[int(owner[k])] = k
        for i in sorted({*np.flatnonzero(untrained).tolist(), *first}):
            if untrained[i]:
                out.append((base + i, "no trained token"))
                continue
            k = first[i]
            start, end = (spans[k] - block.starts[i]).tolist()
            if no_eot[k]:
                problem = (
                    f"the trained response at tokens [{start}, {end}) does not end in an "
                    "end-of-turn/eos token: the model would never learn to stop"
                )
            else:
                why = " (pad == eos: was the eos masked as padding?)" if pad_is_eos else ""
                problem = (
                    f"the end-of-turn token at position {end - 1} ending a response is not a "
                    f"label{why}: the model would never learn to stop"
                )
            out.append((base + i, problem))
        base += len(block)
    return out


def _as_block(examples: Sequence[Example]) -> Block:
    """Any examples (views or not) copied into one block, for the vectorized checks."""
    lengths = [len(ex.input_ids) for ex in examples]
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    counts = [len(ex.spans) for ex in examples]
    span_starts = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=span_starts[1:])

    def cat(arrays: list[np.ndarray], dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

    return Block(
        cat([ex.input_ids for ex in examples], np.int64, (0,)),
        cat([ex.labels for ex in examples], np.int64, (0,)),
        starts,
        cat([np.asarray(ex.spans).reshape(-1, 2) for ex in examples], np.int64, (0, 2)),
        span_starts,
        np.array([ex.cut for ex in examples], np.int64),
        [ex.source for ex in examples],
        [ex.conversation for ex in examples],
    )


def _prompt_problems(
    examples: Sequence[Example], tokenizer: Any, template: Template
) -> list[tuple[Example, str]]:
    """Tokenize each trained turn's generation prompt in full: the response must follow it exactly.

    The spans are the last `len(spans)` assistant turns (truncation and `train_on_turns: last`
    only ever remove earlier ones), so turn j's prompt must tokenize to input_ids[:spans[j, 0]]
    (after the `cut` tokens truncation removed from the start).
    """
    raw = raw_template(tokenizer)
    prompts: list[str] = []
    owners: list[tuple[Example, int]] = []
    for ex in examples:
        conv = ex.conversation
        if conv is None or len(ex.spans) == 0:
            continue
        tmpl = raw if is_raw_conversation(conv.messages) else template
        dicts = tmpl.message_dicts(conv.messages)
        turns = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        for j, i in enumerate(turns[len(turns) - len(ex.spans) :]):
            prompts.append(tmpl.render_dicts(dicts[:i], True, conv.meta or None))
            owners.append((ex, j))
    encs = tokenizer.backend_tokenizer.encode_batch_fast(prompts, add_special_tokens=False)
    problems: dict[int, tuple[Example, str]] = {}
    for (ex, j), enc in zip(owners, encs, strict=True):
        ids = enc.ids[ex.cut :]
        start = int(ex.spans[j, 0])
        if len(ids) != start or ex.input_ids[:start].tolist() != ids:
            problems.setdefault(
                id(ex),
                (
                    ex,
                    f"the generation prompt of trained response {j} ({len(ids)} tokens) is not "
                    f"the {start}-token prefix it was trained after: serving would send "
                    "other tokens",
                ),
            )
    return list(problems.values())
