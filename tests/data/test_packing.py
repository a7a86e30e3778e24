"""Packing (best-fit-decreasing), length grouping, and the collators (they only pad)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from instructune.data.collate import PackedCollator, PaddedCollator
from instructune.data.examples import Example
from instructune.data.packing import Packed, pack, packing_efficiency


def _examples(lengths: list[int]) -> list[Example]:
    out = []
    for i, n in enumerate(lengths):
        ids = np.full(n, i + 10, dtype=np.int32)
        labels = ids.copy()
        labels[0] = -100
        out.append(Example(ids, labels, f"e:{i}"))
    return out


def _reference_bfd(lengths: list[int], max_length: int) -> list[int]:
    """O(n·bins) best-fit-decreasing: the loads (sorted) the fast version must reproduce."""
    loads: list[int] = []
    for n in sorted(lengths, reverse=True):
        fits = [b for b, load in enumerate(loads) if load + n <= max_length]
        if fits:
            best = min(fits, key=lambda b: max_length - loads[b])
            loads[best] += n
        else:
            loads.append(n)
    return sorted(loads)


@pytest.mark.parametrize("seed", range(5))
def test_pack_is_best_fit_decreasing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 128, size=300).tolist()
    packed = pack(_examples(lengths), max_length=128)
    assert sorted(int(p.lengths.sum()) for p in packed) == _reference_bfd(lengths, 128)


def test_pack_keeps_every_example_once_with_restarting_positions() -> None:
    lengths = [5, 3, 8, 2, 7, 1, 4]
    examples = _examples(lengths)
    packed = pack(examples, max_length=10)
    assert sorted(i for p in packed for i in p.indices.tolist()) == list(range(len(lengths)))
    for p in packed:
        assert len(p) <= 10 and p.input_ids.dtype == np.int32
        assert p.lengths.tolist() == [lengths[i] for i in p.indices]
        assert p.position_ids.tolist() == [j for n in p.lengths for j in range(n)]
        want_ids = np.concatenate([examples[i].input_ids for i in p.indices])
        want_labels = np.concatenate([examples[i].labels for i in p.indices])
        assert np.array_equal(p.input_ids, want_ids) and np.array_equal(p.labels, want_labels)
        assert (p.labels[p.position_ids == 0] == -100).all()


def test_pack_efficiency_and_too_long() -> None:
    packed = pack(_examples([6, 4, 5, 5, 3]), max_length=10)
    assert len(packed) == 3
    assert packing_efficiency(packed, 10) == pytest.approx(23 / 30)
    assert packing_efficiency([], 10) == 0.0
    with pytest.raises(ValueError, match="11 tokens, more than max_length=10"):
        pack(_examples([11]), max_length=10)


def test_pack_scales_n_log_n() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 2048, size=50_000).tolist()
    examples = _examples(lengths)
    start = time.perf_counter()
    packed = pack(examples, max_length=2048)
    assert time.perf_counter() - start < 10
    assert packing_efficiency(packed, 2048) > 0.98


def test_packed_collator_only_pads() -> None:
    packed = pack(_examples([5, 3, 4, 6]), max_length=9)
    batch = PackedCollator(pad_token_id=0)(packed)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask, on purpose
    width = max(len(p) for p in packed)
    for row, p in enumerate(packed):
        n = len(p)
        assert batch["input_ids"].shape == (len(packed), width)
        assert batch["input_ids"][row, :n].tolist() == p.input_ids.tolist()
        assert batch["labels"][row, :n].tolist() == p.labels.tolist()
        assert batch["position_ids"][row, :n].tolist() == p.position_ids.tolist()
        assert (batch["input_ids"][row, n:] == 0).all() and (batch["labels"][row, n:] == -100).all()
        assert batch["position_ids"][row, n:].tolist() == list(range(width - n))
    assert batch["input_ids"].dtype == torch.long


def test_padded_collator_pads_and_masks_attention() -> None:
    examples = _examples([3, 5])
    examples[0].labels[-1] = examples[0].input_ids[-1]  # equal to the pad id below: kept as-is
    batch = PaddedCollator(pad_token_id=12)(examples)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"][0].tolist() == [-100, 10, 10, -100, -100]
    assert batch["input_ids"][0].tolist() == [10, 10, 10, 12, 12]
    dict_batch = PaddedCollator(12)(
        [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    )
    assert all(torch.equal(batch[k], dict_batch[k]) for k in batch)


def test_packed_is_a_plain_record() -> None:
    p = Packed(*(np.zeros(2, np.int32) for _ in range(5)))
    assert len(p) == 2


def test_pack_of_a_store_is_views_equal_to_copies() -> None:
    """From an `Examples` store rows hold no tokens: assembled on access, equal to the copies."""
    from instructune.data.conversation import Conversation, Message
    from instructune.data.examples import Examples, build_block

    lengths = [5, 3, 8, 2, 7, 9, 4, 6]  # >= 2: a 1-token example has nothing to train
    examples = _examples(lengths)
    store = Examples()
    for lo, hi in ((0, 3), (3, 8)):  # two blocks
        part = examples[lo:hi]
        built = build_block(
            np.concatenate([e.input_ids for e in part]),
            [len(e) for e in part],
            [[0, len(e)] for e in part],  # each example is one trained turn
            [Conversation([Message("user", "x")], e.source) for e in part],
            [False] * len(part),
            np.zeros(64, bool),
            10,
            False,
        )
        assert built.block is not None
        store.append(built.block)
    views, copies = pack(store, max_length=10), pack(examples, max_length=10)
    assert len(views) == len(copies)
    for v, c in zip(views, copies, strict=True):
        assert np.array_equal(v.indices, c.indices) and np.array_equal(v.lengths, c.lengths)
        for name in ("input_ids", "labels", "position_ids"):
            got, want = getattr(v, name), getattr(c, name)
            assert got.dtype == np.int32 and np.array_equal(got, want), name
        assert len(v) == len(c)
    assert packing_efficiency(views, 10) == packing_efficiency(copies, 10)
