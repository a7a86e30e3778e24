"""Collators: they only pad. Label values are never changed outside the padding region.

`PackedCollator` emits no attention_mask on purpose: transformers (5.x) builds the block-causal mask
of packed rows from position_ids only when attention_mask is None and no KV cache is used
(`find_packed_sequence_indices` in transformers/masking_utils.py). The padding tail gets positions
restarting at 0, so it is a segment of its own that no real token attends to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from instructune.models.labels import IGNORE_INDEX


def _get(feature: Any, name: str) -> np.ndarray:
    value = feature[name] if isinstance(feature, Mapping) else getattr(feature, name)
    return np.asarray(value, dtype=np.int64)


def pad_rows(rows: Sequence[np.ndarray], value: int, length: int) -> torch.Tensor:
    """Rows right-padded with `value` to `length` → one int64 tensor [len(rows), length]."""
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _ids_and_labels(
    features: Sequence[Any], pad_token_id: int
) -> tuple[list[np.ndarray], int, dict[str, torch.Tensor]]:
    """The rows' ids, the longest row's length, and input_ids and labels padded to it."""
    ids = [_get(f, "input_ids") for f in features]
    length = max(len(r) for r in ids)
    return (
        ids,
        length,
        {
            "input_ids": pad_rows(ids, pad_token_id, length),
            "labels": pad_rows([_get(f, "labels") for f in features], IGNORE_INDEX, length),
        },
    )


@dataclass(frozen=True)
class PackedCollator:
    """Packed rows → {input_ids, labels, position_ids} [B, L], padded to the longest row."""

    pad_token_id: int

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        ids, length, batch = _ids_and_labels(features, self.pad_token_id)
        positions = np.tile(np.arange(length, dtype=np.int64), (len(ids), 1))
        for i, f in enumerate(features):
            n = len(ids[i])
            positions[i, :n] = _get(f, "position_ids")
            positions[i, n:] -= n  # the padding tail restarts at 0: a segment of its own
        return {**batch, "position_ids": torch.from_numpy(positions)}


@dataclass(frozen=True)
class PaddedCollator:
    """One example per row → {input_ids, labels, attention_mask} [B, L], right-padded."""

    pad_token_id: int

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        ids, length, batch = _ids_and_labels(features, self.pad_token_id)
        mask = pad_rows([np.ones(len(r), np.int64) for r in ids], 0, length)
        return {**batch, "attention_mask": mask}
