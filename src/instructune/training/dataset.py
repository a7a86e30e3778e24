"""The map-style dataset the Trainer samples from: prepared rows, as they are, plus their collator.

Rows stay numpy arrays until the collator pads a batch, so there is no per-row tensor copy. Items
are mappings (not the dataclasses) because the Trainer's `group_by_length` sampler reads
`item["input_ids"]` to get lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from instructune.data.collate import PackedCollator, PaddedCollator
from instructune.data.examples import Example
from instructune.data.packing import Packed
from instructune.data.pipeline import PreparedData
from instructune.models.labels import IGNORE_INDEX

_PACKED_FIELDS = ("input_ids", "labels", "position_ids")
_PADDED_FIELDS = ("input_ids", "labels")


class TokenDataset(Dataset[dict[str, np.ndarray]]):
    """Packed rows (input_ids, labels, position_ids) or single examples (input_ids, labels)."""

    def __init__(self, rows: Sequence[Packed] | Sequence[Example], packed: bool) -> None:
        self.rows = rows
        self.packed = packed
        self._fields = _PACKED_FIELDS if packed else _PADDED_FIELDS

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        row = self.rows[index]
        return {name: getattr(row, name) for name in self._fields}

    def collator(self, pad_token_id: int) -> PackedCollator | PaddedCollator:
        return PackedCollator(pad_token_id) if self.packed else PaddedCollator(pad_token_id)

    def trained_tokens(self) -> int:
        """Targets the loss sees: labels[1:] that are trained (labels[0] of an example never is)."""
        return int(sum(np.count_nonzero(row.labels[1:] != IGNORE_INDEX) for row in self.rows))

    def tokens(self) -> int:
        return int(sum(len(row.input_ids) for row in self.rows))


def build_datasets(prepared: PreparedData) -> tuple[TokenDataset, TokenDataset | None]:
    """(train, eval or None): packed rows when the data stage packed them, else examples."""
    packed = prepared.train_packed is not None
    train_rows: Any = prepared.train_packed if packed else prepared.train
    eval_rows: Any = prepared.eval_packed if packed else prepared.eval
    if not train_rows:
        raise ValueError("the prepared training split is empty; check data.train and the audit")
    train = TokenDataset(train_rows, packed)
    evaluation = TokenDataset(eval_rows, packed) if eval_rows else None
    return train, evaluation
