"""Preference rows → (prompt, chosen, rejected) conversations → token pairs with the SFT guarantees.

The `preference` format reads the common shapes into one `Conversation`: the prompt turns and the
chosen answer as its last assistant turn, the rejected answer in `meta["rejected"]`:

- `{prompt or messages, chosen, rejected}` with string answers (TRL's "standard" and
  "conversational prompt" forms; `prompt` may itself be a message list);
- full conversations as `chosen`/`rejected` message lists that share every turn but the last
  (binarized UltraFeedback), or Anthropic HH transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`)
  with a shared prefix;
- UltraFeedback-style `{prompt, completions: [{response or text, score or overall_score}]}`:
  the best-scored completion is chosen, the worst rejected.

`encode_pairs` tokenizes chosen and rejected as two SFT conversations (the same renderer, the
same prefix checks, only the final answer trained and ending with the end-of-turn token) and
audits that both tokenize the prompt identically, so the two answers are scored after exactly the
prompt the run's template renders.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.conversation import (
    REJECTED,
    REJECTED_MESSAGE,
    TOOLS,
    Conversation,
    Message,
    Role,
    RowError,
    row_error,
)
from instructune.data.messages import message_from_json, message_json, parse_messages, parse_tools
from instructune.models.labels import IGNORE_INDEX

HH_MARKER = "\n\nHuman:"
"""How an Anthropic HH transcript starts: only a string starting with it is read as one."""
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def preference_row(row: Mapping[str, Any], location: str, columns: Mapping[str, str]) -> Any:
    """One preference row as a `Conversation` (see the module docstring); RowError when bad."""

    def get(name: str) -> Any:
        return row.get(columns.get(name, name))

    if get("completions") is not None:
        chosen, rejected = _by_score(get("completions"), location)
    else:
        chosen, rejected = get("chosen"), get("rejected")
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if value is None:
                raise row_error(
                    location,
                    f"missing field {columns.get(name, name)!r}",
                    f"columns found: {', '.join(sorted(map(str, row)))}",
                )
    good, bad = _turns(chosen, "chosen", location), _turns(rejected, "rejected", location)
    if not good or not bad:
        raise row_error(location, "empty answer", "chosen and rejected must not be empty lists")
    # Full conversations as answers (UltraFeedback-binarized, HH) carry their prompt: their
    # shared turns are the prompt, and a `prompt` column beside them repeats it.
    full = any(len(t) > 1 or (t and t[0].role != "assistant") for t in (good, bad))
    given = get("messages") if get("messages") is not None else get("prompt")
    prompt = [] if full else _turns(given, "prompt", location)
    shared = 0
    while shared < min(len(good), len(bad)) - 1 and good[shared] == bad[shared]:
        shared += 1
    prompt += good[:shared]
    good, bad = good[shared:], bad[shared:]
    for name, rest in (("chosen", good), ("rejected", bad)):
        if len(rest) != 1 or rest[0].role != "assistant" or not _answered(rest[0]):
            raise row_error(
                location,
                f"{name} is not one answer after the shared prompt",
                "chosen and rejected must differ only in their last assistant turn",
            )
    if not prompt or prompt[-1].role == "assistant":
        raise row_error(location, "no prompt", "the answers must follow a user turn")
    system = get("system")
    if isinstance(system, str) and system.strip() and prompt[0].role != "system":
        prompt.insert(0, Message("system", system))
    meta = {REJECTED: bad[0].content}
    if bad[0] != Message("assistant", bad[0].content):  # tool calls, reasoning: kept whole
        meta[REJECTED_MESSAGE] = message_json(bad[0])
    tools = parse_tools(get("tools"), columns.get("tools", "tools"), location)
    if tools:
        meta[TOOLS] = tools
    return Conversation([*prompt, good[0]], location, meta=meta)


def _answered(message: Message) -> bool:
    return bool(message.content.strip() or message.tool_calls)


def _by_score(completions: Any, location: str) -> tuple[str, str]:
    if not isinstance(completions, list) or len(completions) < 2:
        raise row_error(location, "wrong type for 'completions'", "expected a list of 2 or more")
    scored = []
    for i, item in enumerate(completions):
        text = item.get("response", item.get("text")) if isinstance(item, dict) else None
        score = item.get("score", item.get("overall_score")) if isinstance(item, dict) else None
        if not isinstance(text, str) or not isinstance(score, int | float):
            raise row_error(
                location,
                "bad completion",
                f"completions[{i}] needs response (or text) and a numeric score",
            )
        scored.append((float(score), text))
    scored.sort(key=lambda s: s[0])
    if scored[0][0] == scored[-1][0]:
        raise row_error(location, "no preference", "every completion has the same score")
    return scored[-1][1], scored[0][1]


def _turns(value: Any, name: str, location: str) -> list[Message]:
    """A string (an HH transcript when it starts with `HH_MARKER`, else one turn: user for the
    prompt, assistant for answers) or a message list (`data.messages`' rules), as messages.

    Only the marker at the very start makes a transcript: an answer that mentions
    "\\n\\nHuman: " in its text is still one answer."""
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith(HH_MARKER):
            parts = _HH_TURN.split(value)[1:]
            roles: dict[str, Role] = {"Human": "user", "Assistant": "assistant"}
            pairs = zip(parts[::2], parts[1::2], strict=True)
            return [Message(roles[r], t.strip()) for r, t in pairs]
        return [Message("user" if name == "prompt" else "assistant", value)]
    if not isinstance(value, list):
        raise row_error(
            location,
            f"wrong type for {name!r}",
            f"expected a string or a message list, got {type(value).__name__}",
        )
    return parse_messages(value, name, location, "openai")


# ----------------------------------------------------------------------------- token pairs


@dataclass(frozen=True)
class Pair:
    """A tokenized preference pair: chosen and rejected share `prompt_len` prompt tokens."""

    chosen_ids: np.ndarray
    chosen_labels: np.ndarray
    rejected_ids: np.ndarray
    rejected_labels: np.ndarray
    source: str
    prompt_len: int


@dataclass
class EncodedPairs:
    pairs: list[Pair]
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_rows: list[dict[str, str]] = field(default_factory=list)


def rejected_conversation(conv: Conversation) -> Conversation:
    """The same prompt with the rejected answer as its last turn."""
    if REJECTED not in conv.meta:
        raise RowError(
            conv.source,
            "not a preference pair (no rejected answer): set format: preference on the data source",
        )
    structured = conv.meta.get(REJECTED_MESSAGE)
    answer = (
        message_from_json(structured, conv.source)
        if structured is not None
        else Message("assistant", conv.meta[REJECTED])
    )
    return Conversation(
        [*conv.messages[:-1], answer],
        conv.source,
        conv.label,
        dict(conv.meta),
    )


def encode_pairs(
    convs: Sequence[Conversation], template: Any, tokenizer: Any, cfg: DataConfig
) -> EncodedPairs:
    """Tokenize each pair's two conversations (only the final answer trained) and audit them."""
    from instructune.data.audit import AuditError, audit
    from instructune.data.tokenize import encode_conversations

    pair_cfg = cfg.model_copy(
        update={"train_on_turns": "last", "train_on_inputs": False, "packing": False}
    )
    rejected = [rejected_conversation(c) for c in convs]
    encoded = [
        encode_conversations(group, template, tokenizer, pair_cfg) for group in (convs, rejected)
    ]
    if cfg.audit:
        for enc in encoded:
            audit(enc.examples, tokenizer, template, 16)
    result = EncodedPairs([])
    for side, enc in zip(("chosen", "rejected"), encoded, strict=True):
        result.dropped.update({f"{side}_{k}": v for k, v in enc.dropped.items()})
        result.dropped_rows += [{"stage": side, **d.as_dict()} for d in enc.dropped_rows]
    by_source = {e.source: e for e in encoded[1].examples}
    for good in encoded[0].examples:
        bad = by_source.get(good.source)
        if bad is None:
            continue
        k_good, k_bad = _prompt_len(good.labels), _prompt_len(bad.labels)
        if k_good != k_bad or not np.array_equal(good.input_ids[:k_good], bad.input_ids[:k_bad]):
            raise AuditError(
                f"{good.source}: the prompt tokenizes differently before the chosen and the "
                f"rejected answer ({k_good} vs {k_bad} tokens): the answers would not be scored "
                "after the same prompt; check the template"
            )
        result.pairs.append(
            Pair(
                np.asarray(good.input_ids),
                np.asarray(good.labels),
                np.asarray(bad.input_ids),
                np.asarray(bad.labels),
                good.source,
                k_good,
            )
        )
    unpaired = len(encoded[0].examples) - len(result.pairs)
    if unpaired:
        result.dropped["unpaired"] += unpaired
    return result


def _prompt_len(labels: np.ndarray) -> int:
    trained = np.flatnonzero(np.asarray(labels) != IGNORE_INDEX)
    return int(trained[0]) if trained.size else len(labels)


# ----------------------------------------------------------------------------- the data stage


@dataclass
class PreparedPairs:
    """The preference data stage's result: what `run_train` reads from `PreparedData` too."""

    template: Any
    train: list[Pair]
    eval: list[Pair]
    sources: list[Any]
    dropped: Counter[str]
    dropped_rows: list[dict[str, str]]
    stats: dict[str, Any]
    hashes: dict[str, str]


def prepare_pairs(cfg: DataConfig, tokenizer: Any) -> PreparedPairs:
    """Read, dedup and split like SFT data (`load_splits`), then tokenize and audit pairs."""
    from instructune.data.lineage import dataset_hash
    from instructune.data.pipeline import load_splits
    from instructune.data.templates import load_template

    template = load_template(cfg.template, tokenizer)
    splits = load_splits(cfg)
    train = encode_pairs(splits.train, template, tokenizer, cfg)
    if not train.pairs:
        raise ValueError(
            f"no preference pairs left for training ({dict(train.dropped)}); check the data "
            "(format: preference) and data.max_length"
        )
    held_out = encode_pairs(splits.eval, template, tokenizer, cfg)
    dropped = splits.dropped + train.dropped
    dropped.update({f"eval_{k}": v for k, v in held_out.dropped.items()})
    return PreparedPairs(
        template=template,
        train=train.pairs,
        eval=held_out.pairs,
        sources=splits.sources,
        dropped=+dropped,
        dropped_rows=[*splits.dropped_rows, *train.dropped_rows, *held_out.dropped_rows],
        stats={"train": pair_stats(train.pairs), "eval": pair_stats(held_out.pairs)},
        hashes={
            "train": dataset_hash(_flat(train.pairs)),
            "eval": dataset_hash(_flat(held_out.pairs)),
        },
    )


def pair_stats(pairs: Sequence[Pair]) -> Any:
    from instructune.data.pipeline import SplitStats

    lengths = [len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    trained = sum(
        int(np.count_nonzero(p.chosen_labels != IGNORE_INDEX))
        + int(np.count_nonzero(p.rejected_labels != IGNORE_INDEX))
        for p in pairs
    )
    return SplitStats(len(pairs), int(sum(lengths)), trained, lengths)


def _flat(pairs: Sequence[Pair]) -> Any:
    for p in pairs:
        yield p.chosen_ids, p.chosen_labels
        yield p.rejected_ids, p.rejected_labels
