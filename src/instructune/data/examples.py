"""Tokenized examples, stored flat: `Examples` holds blocks of back-to-back int32 ids and labels.

An `Example` is a view made on access (`input_ids`/`labels` are slices of the block's arrays, so
writing through them writes the block). Per-token Python objects never exist, and numpy code (the
audit, statistics, packing) reads the blocks' arrays directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, overload

import numpy as np

from instructune.models.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from instructune.data.conversation import Conversation


@dataclass(slots=True)
class Example:
    """One tokenized conversation. Labels are aligned with input_ids (transformers shifts them).

    `spans` are the trained responses as [start, end) token ranges (end includes the end-of-turn
    token); `conversation` and `cut` (tokens removed from the start by truncation) let `audit`
    re-render the generation prompts.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    source: str
    spans: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    conversation: Conversation | None = None
    cut: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def build_labels(input_ids: np.ndarray, spans: np.ndarray, train_on_inputs: bool) -> np.ndarray:
    """The one label rule: trained spans keep their ids, everything else is -100.

    The first token is always -100: nothing predicts it, and with packing this is what keeps the
    last token of one example from being trained to predict the first token of the next.
    """
    starts = np.array([0, len(input_ids)], np.int64)
    return flat_labels(
        input_ids, starts, np.asarray(spans, np.int64).reshape(-1, 2), train_on_inputs
    )


def flat_labels(
    ids: np.ndarray, starts: np.ndarray, spans: np.ndarray, train_on_inputs: bool
) -> np.ndarray:
    """`build_labels` over examples back to back (`starts`: n+1 offsets; `spans`: absolute)."""
    if train_on_inputs:
        labels = ids.astype(np.int32, copy=True)
    else:
        edges = len(ids) + 1
        depth = np.bincount(spans[:, 0], minlength=edges) - np.bincount(
            spans[:, 1], minlength=edges
        )
        labels = np.where(np.cumsum(depth[:-1]) > 0, ids, IGNORE_INDEX).astype(np.int32)
    firsts = starts[:-1][starts[:-1] < starts[1:]]
    labels[firsts] = IGNORE_INDEX
    return labels


class Block:
    """A chunk of examples: ids/labels back to back, spans relative to each example's start."""

    __slots__ = ("convs", "cuts", "ids", "labels", "sources", "span_starts", "spans", "starts")

    def __init__(
        self,
        ids: np.ndarray,
        labels: np.ndarray,
        starts: np.ndarray,
        spans: np.ndarray,
        span_starts: np.ndarray,
        cuts: np.ndarray,
        sources: Sequence[str],
        convs: list[Conversation | None],
    ) -> None:
        self.ids, self.labels, self.starts = ids, labels, starts
        self.spans, self.span_starts, self.cuts = spans, span_starts, cuts
        self.sources, self.convs = sources, convs

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        spans: np.ndarray,
        owner: np.ndarray,
        starts: np.ndarray,
        cuts: np.ndarray,
        convs: list[Conversation],
        keep: list[bool],
        train_on_inputs: bool,
    ) -> Block:
        """From spans relative to their owner example (sorted by owner): labels and offsets."""
        n = len(convs)
        labels = flat_labels(ids, starts, spans + starts[owner][:, None], train_on_inputs)
        span_starts = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(owner, minlength=n), out=span_starts[1:])
        sources = Strings([c.source for c in convs])
        kept = [c if k else None for c, k in zip(convs, keep, strict=True)]
        return cls(ids, labels, starts, spans.astype(np.int32), span_starts, cuts, sources, kept)

    def __len__(self) -> int:
        return len(self.sources)

    def example(self, j: int) -> Example:
        a, b = int(self.starts[j]), int(self.starts[j + 1])
        s, e = int(self.span_starts[j]), int(self.span_starts[j + 1])
        return Example(
            self.ids[a:b],
            self.labels[a:b],
            self.sources[j],
            self.spans[s:e],
            self.convs[j],
            int(self.cuts[j]),
        )

    def abs_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(spans in block coordinates [m, 2], owner example of each span)."""
        owner = np.repeat(np.arange(len(self)), np.diff(self.span_starts))
        return self.spans + self.starts[owner][:, None], owner


@dataclass(slots=True)
class Built:
    """A chunk made into a block: what was dropped (`untrained` as examples, for the error)."""

    block: Block | None
    too_long: int = 0
    truncated: int = 0
    untrained: list[Example] = field(default_factory=list)


def build_block(
    ids: np.ndarray,
    lengths: list[int],
    bounds: list[list[int]],
    convs: list[Conversation],
    keep: list[bool],
    is_eot: np.ndarray,
    max_length: int,
    train_on_inputs: bool,
) -> Built:
    """Examples back to back (`ids`, `lengths`) with their turns' token bounds (`bounds`: prompt
    end, turn end, ... per example) → truncated, labeled block; drops counted in `Built`.

    `truncate_prompt` semantics: an example over `max_length` loses its first tokens and the
    spans that don't start after the cut; it is too long if its last span doesn't.
    """
    lens = np.asarray(lengths, np.int64)
    starts = _offsets(lens)
    owner, spans = _turn_spans(ids, starts, bounds, is_eot)
    cuts = np.maximum(lens - max_length, 0)
    spans_cut = spans - cuts[owner][:, None]
    keep_span = (cuts[owner] == 0) | (spans_cut[:, 0] > 0)
    if train_on_inputs:
        trained = np.maximum(lens - cuts - 1, 0)
    else:  # labels[0] of an example is never trained
        per_span = np.maximum(spans_cut[:, 1] - np.maximum(spans_cut[:, 0], 1), 0) * keep_span
        trained = np.bincount(owner, per_span, minlength=len(lens))
    last = np.full(len(lens), -1, np.int64)
    np.maximum.at(last, owner, spans[:, 0])
    too_long = (cuts > 0) & (last <= cuts)
    ok = ~too_long & (trained > 0)
    out = Built(None, int(np.count_nonzero(too_long)))
    for i in np.flatnonzero(~ok & ~too_long).tolist():
        row, sp = ids[starts[i] : starts[i + 1]], spans[owner == i].astype(np.int32)
        labels = build_labels(row, sp, train_on_inputs)
        out.untrained.append(Example(row, labels, convs[i].source, sp, convs[i]))
    if not ok.any():
        return out
    if not ok.all() or cuts.any():
        pick = np.flatnonzero(ok).tolist()
        ids = np.concatenate([ids[starts[i] + cuts[i] : starts[i + 1]] for i in pick])
        keep_span &= ok[owner]
        owner, spans = (np.cumsum(ok) - 1)[owner[keep_span]], spans_cut[keep_span]
        lens, cuts = (lens - cuts)[pick], cuts[pick]
        convs, keep = [convs[i] for i in pick], [keep[i] for i in pick]
        starts = _offsets(lens)
    out.truncated = int(np.count_nonzero(cuts))
    out.block = Block.build(ids, spans, owner, starts, cuts, convs, keep, train_on_inputs)
    return out


def _offsets(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def _turn_spans(
    ids: np.ndarray, starts: np.ndarray, bounds: list[list[int]], is_eot: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(owner, [start, end) relative to it) per trained turn: from the end of its prompt up to
    and including the first end-of-turn token before the turn's end (if none, the whole turn:
    the audit reports it)."""
    per = np.fromiter((len(b) // 2 for b in bounds), np.int64, len(bounds))
    owner = np.repeat(np.arange(len(bounds)), per)
    flat = np.fromiter((t for b in bounds for t in b), np.int64, 2 * len(owner))
    lo, hi = flat[0::2] + starts[owner], flat[1::2] + starts[owner]
    eot = np.flatnonzero(is_eot[ids])
    k = np.searchsorted(eot, lo)
    at = eot[np.minimum(k, len(eot) - 1)] if len(eot) else np.zeros_like(lo)
    hi = np.where((k < len(eot)) & (at < hi), at + 1, hi)
    return owner, np.stack([lo, hi], axis=1) - starts[owner][:, None]


_T = TypeVar("_T")


class _Indexed(Sequence[_T]):
    """A sequence whose subclass gives item i for 0 <= i < len (`_at`): slices, negative indices
    and the range check are handled here, once."""

    __slots__ = ()

    def _at(self, index: int) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} of {n}")
        return self._at(index)


class Strings(_Indexed[str]):
    """Strings packed into one: holding thousands of `file:line` sources this way lets the rows
    they came from be freed for real (small strings left behind pin the allocator's arenas)."""

    __slots__ = ("_ends", "_text")

    def __init__(self, strings: Sequence[str]) -> None:
        self._text = "".join(strings)
        self._ends = np.zeros(len(strings) + 1, np.int64)
        np.cumsum([len(s) for s in strings], out=self._ends[1:])

    def __len__(self) -> int:
        return len(self._ends) - 1

    def _at(self, index: int) -> str:
        return self._text[int(self._ends[index]) : int(self._ends[index + 1])]

    def __iter__(self) -> Iterator[str]:
        text = self._text
        return (text[a:b] for a, b in itertools.pairwise(self._ends.tolist()))


class Examples(_Indexed[Example]):
    """Examples stored in `Block`s; indexing and iteration make `Example` views."""

    def __init__(self, blocks: Sequence[Block] = ()) -> None:
        self.blocks: list[Block] = []
        self._ends: list[int] = []
        for block in blocks:
            self.append(block)

    def append(self, block: Block) -> None:
        self.blocks.append(block)
        self._ends.append((self._ends[-1] if self._ends else 0) + len(block))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _at(self, index: int) -> Example:
        b = _bisect_right(self._ends, index)
        return self.blocks[b].example(index - (self._ends[b - 1] if b else 0))

    def __iter__(self) -> Iterator[Example]:
        for block in self.blocks:
            for j in range(len(block)):
                yield block.example(j)

    def __repr__(self) -> str:
        return f"Examples({len(self)} examples in {len(self.blocks)} blocks)"

    def lengths(self) -> np.ndarray:
        """Token count of every example (int64)."""
        if not self.blocks:
            return np.zeros(0, np.int64)
        return np.concatenate([np.diff(b.starts) for b in self.blocks])

    def gather(self, indices: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
        """The `ids` or `labels` of the examples at `indices`, concatenated (a new array)."""
        parts = []
        for index in np.asarray(indices).tolist():
            b = _bisect_right(self._ends, index)
            block = self.blocks[b]
            j = index - (self._ends[b - 1] if b else 0)
            parts.append(getattr(block, name)[block.starts[j] : block.starts[j + 1]])
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def sources(self) -> Iterator[str]:
        for block in self.blocks:
            yield from block.sources

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(input_ids, labels) of every example, in order, without making `Example`s."""
        for block in self.blocks:
            bounds = block.starts.tolist()
            for a, b in itertools.pairwise(bounds):
                yield block.ids[a:b], block.labels[a:b]

    def trained_tokens(self) -> int:
        return sum(int(np.count_nonzero(b.labels != IGNORE_INDEX)) for b in self.blocks)

    def conversation_indices(self) -> list[int]:
        """Indices of the examples that kept their conversation."""
        out, base = [], 0
        for block in self.blocks:
            out += [base + j for j, c in enumerate(block.convs) if c is not None]
            base += len(block)
        return out


def _bisect_right(ends: list[int], index: int) -> int:
    import bisect

    return bisect.bisect_right(ends, index)
