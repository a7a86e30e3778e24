"""Exact dedup and the seeded train/eval split.

Both are deterministic across runs and Python hash seeds: groups are visited in sorted label
order and randomness comes only from `random.Random(seed)`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from instructune.data.conversation import Conversation, DataError

__all__ = ["dedup", "train_eval_split"]


def dedup(conversations: Iterable[Conversation]) -> tuple[list[Conversation], list[Conversation]]:
    """Drop exact duplicates (on `Conversation.text_key()`), keeping the first; (kept, dropped)."""
    seen: set[str] = set()
    kept: list[Conversation] = []
    dropped: list[Conversation] = []
    for conversation in conversations:
        key = conversation.text_key()
        if key in seen:
            dropped.append(conversation)
        else:
            seen.add(key)
            kept.append(conversation)
    return kept, dropped


def train_eval_split(
    conversations: Sequence[Conversation], fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Hold out `fraction` of the rows for eval; both parts keep the input order.

    When every conversation has a label the split is stratified: each label keeps about the same
    share, and a label with at least two rows gives at least one to eval (and keeps one for
    training). Otherwise it is a plain seeded shuffle.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"eval fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return list(conversations), []
    if len(conversations) < 2:
        raise DataError(
            f"can't hold out an eval fraction of {len(conversations)} row(s); add data or set "
            "data.eval_fraction: 0"
        )
    rng = random.Random(seed)
    labels = [c.label for c in conversations]
    if all(label is not None for label in labels):
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(str(label), []).append(i)
        held = [i for label in sorted(groups) for i in _pick(groups[label], fraction, rng)]
    else:
        held = _pick(list(range(len(conversations))), fraction, rng)
    eval_set = set(held)
    train = [c for i, c in enumerate(conversations) if i not in eval_set]
    evaluation = [c for i, c in enumerate(conversations) if i in eval_set]
    return train, evaluation


def _pick(indices: list[int], fraction: float, rng: random.Random) -> list[int]:
    """A seeded sample of round(n * fraction) indices, at least 1 and at most n - 1 when n ≥ 2."""
    n = len(indices)
    if n < 2:
        return []
    count = min(max(1, round(n * fraction)), n - 1)
    shuffled = indices.copy()
    rng.shuffle(shuffled)
    return shuffled[:count]
