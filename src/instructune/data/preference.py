"""Preference conversations (from the `preference` row format, `data.preference_rows`) → token
pairs with the SFT guarantees, and the preference data stage.

`encode_pairs` tokenizes chosen and rejected as two SFT conversations (the same renderer, the
same prefix checks, only the final answer trained and ending with the end-of-turn token) and
audits that both tokenize the prompt identically, so the two answers are scored after exactly the
prompt the run's template renders.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.config.schema import DataConfig
from instructune.data.conversation import (
    REJECTED,
    REJECTED_MESSAGE,
    Conversation,
    Message,
    RowError,
)
from instructune.data.messages import message_from_json
from instructune.models.labels import IGNORE_INDEX

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
