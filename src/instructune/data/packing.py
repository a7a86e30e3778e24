"""Packing examples into rows of at most `max_length` tokens, and length grouping for padding.

Packed rows carry `position_ids` that restart at 0 for every example: transformers derives a
block-causal mask from them (attention never crosses examples), and since every example's first
label is -100 no token is trained to predict the next example's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from instructune.data.examples import Examples


class _Tokenized(Protocol):
    input_ids: np.ndarray
    labels: np.ndarray


class Packed:
    """One packed row. `lengths` are the examples' lengths in order, `indices` their input index.

    Built by `pack` from an `Examples` store, a row holds no tokens of its own: `input_ids`,
    `labels` and `position_ids` are assembled from the store on access (each is a fresh array).
    """

    __slots__ = ("_ids", "_labels", "_positions", "_store", "indices", "lengths")

    def __init__(
        self,
        input_ids: np.ndarray | None,
        labels: np.ndarray | None,
        position_ids: np.ndarray | None,
        lengths: np.ndarray,
        indices: np.ndarray,
        *,
        store: Examples | None = None,
    ) -> None:
        self._ids, self._labels, self._positions = input_ids, labels, position_ids
        self.lengths, self.indices, self._store = lengths, indices, store

    def _own_or_gathered(self, own: np.ndarray | None, name: str) -> np.ndarray:
        if own is not None:
            return own
        assert self._store is not None
        return self._store.gather(self.indices, name)

    @property
    def input_ids(self) -> np.ndarray:
        return self._own_or_gathered(self._ids, "ids")

    @property
    def labels(self) -> np.ndarray:
        return self._own_or_gathered(self._labels, "labels")

    @property
    def position_ids(self) -> np.ndarray:
        if self._positions is not None:
            return self._positions
        sizes = self.lengths.astype(np.int64)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        return (np.arange(int(sizes.sum()), dtype=np.int64) - starts).astype(np.int32)

    def __len__(self) -> int:
        return len(self._ids) if self._ids is not None else int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"Packed({len(self)} tokens, {len(self.lengths)} examples)"


class _FreeSpace:
    """Bins by remaining capacity; finds the fullest bin that still fits in O(log max_length).

    A Fenwick tree counts bins per remaining capacity, so "smallest capacity >= need" is a prefix
    count plus a binary descent, instead of a scan over all open bins.
    """

    def __init__(self, max_length: int) -> None:
        self.size = max_length + 1  # capacities 0..max_length
        self.tree = np.zeros(self.size + 1, dtype=np.int64).tolist()
        self.bins: list[list[int]] = [[] for _ in range(self.size)]
        self.top = 1 << (self.size.bit_length())

    def _add(self, cap: int, delta: int) -> None:
        i = cap + 1
        while i <= self.size:
            self.tree[i] += delta
            i += i & -i

    def _count_below(self, cap: int) -> int:  # bins with capacity < cap
        i, total = cap, 0
        while i > 0:
            total += self.tree[i]
            i -= i & -i
        return int(total)

    def push(self, cap: int, bin_id: int) -> None:
        self.bins[cap].append(bin_id)
        self._add(cap, 1)

    def pop_fitting(self, need: int) -> tuple[int, int] | None:
        """Remove and return (capacity, bin) of the bin with the least capacity >= need."""
        rank = self._count_below(need)  # the answer is the (rank+1)-th bin by capacity
        pos, step = 0, self.top
        while step:
            nxt = pos + step
            if nxt <= self.size and self.tree[nxt] <= rank:
                pos = nxt
                rank -= self.tree[nxt]
            step >>= 1
        if pos >= self.size:
            return None
        cap = pos  # tree index pos+1 holds capacity pos
        self._add(cap, -1)
        return cap, self.bins[cap].pop()


def pack(examples: Sequence[_Tokenized], max_length: int) -> list[Packed]:
    """Best-fit-decreasing: longest first, each into the open bin with least room that fits.

    From an `Examples` store the rows are views assembled on access (no copy of the tokens);
    from any other sequence they are concatenated copies.
    """
    store = examples if isinstance(examples, Examples) else None
    if store is not None:
        lengths = store.lengths()
    else:
        lengths = np.fromiter((len(e.input_ids) for e in examples), np.int64, len(examples))
    if len(lengths) and lengths.max() > max_length:
        raise ValueError(
            f"an example has {int(lengths.max())} tokens, more than max_length={max_length}; "
            "encode with the same max_length (truncation drops or cuts long examples)"
        )
    order = np.argsort(-lengths, kind="stable")
    free = _FreeSpace(max_length)
    bins: list[list[int]] = []
    for i, need in zip(order.tolist(), lengths[order].tolist(), strict=True):
        found = free.pop_fitting(need)
        if found is None:
            cap, b = max_length, len(bins)
            bins.append([])
        else:
            cap, b = found
        bins[b].append(i)
        free.push(cap - need, b)
    if store is not None:
        return [
            Packed(
                None, None, None, lengths[m].astype(np.int32), np.array(m, np.int32), store=store
            )
            for m in bins
        ]
    arange = np.arange(max_length, dtype=np.int32)
    return [_concat(examples, members, lengths, arange) for members in bins]


def _concat(
    examples: Sequence[_Tokenized], members: list[int], lengths: np.ndarray, arange: np.ndarray
) -> Packed:
    parts = [examples[i] for i in members]
    sizes = lengths[members]
    return Packed(
        input_ids=np.concatenate([p.input_ids for p in parts]).astype(np.int32, copy=False),
        labels=np.concatenate([p.labels for p in parts]).astype(np.int32, copy=False),
        position_ids=np.concatenate([arange[:n] for n in sizes.tolist()]),
        lengths=sizes.astype(np.int32),
        indices=np.array(members, dtype=np.int32),
    )


def packing_efficiency(packed: Sequence[Packed], max_length: int) -> float:
    """Real tokens / (rows × max_length): the share of each step's compute spent on data."""
    if not packed:
        return 0.0
    return float(sum(len(p) for p in packed)) / (len(packed) * max_length)
