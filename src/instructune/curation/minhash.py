"""Near-duplicate detection: MinHash over word n-grams with LSH banding, vectorized in numpy.

Texts are lowercased and split into words (`\\w+`); each word n-gram (n = 5) is hashed to 64 bits
(per-word BLAKE2b hashes combined with fixed odd multipliers, so the result doesn't depend on
Python's hash seed); a text shorter than n words is one shingle. The 256 hash functions are
multiply-shift hashes `(a·x + b) >> 32` with seeded odd `a`, computed for a block of shingles at
once and reduced per text with `np.minimum.reduceat`: no Python work per shingle or permutation.

LSH picks bands × rows the way datasketch does, minimizing the weighted false-positive plus
false-negative probability mass around the threshold, but weighting misses 9:1 (datasketch: 1:1):
every candidate pair is verified — it counts only when its signatures agree on at least
`threshold` of the permutations, the MinHash estimate of their Jaccard similarity — so a false
candidate costs one comparison while a missed one is a duplicate left in the data. Clusters are
the connected components of those pairs; the first text of each cluster (input order) is kept.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["NGRAM", "NUM_PERM", "NearDuplicates", "lsh_params", "near_duplicates", "shingle_words"]

NUM_PERM = 256
NGRAM = 5
_WORD = re.compile(r"\w+")
_CHUNK = 512  # shingles per block: 512 x 256 x 8 bytes = 1 MiB of hash values, cache-sized
_HIGH = 1 if sys.byteorder == "little" else 0  # the uint32 half holding the high bits
_SEED = 0x5EED
_MISS_WEIGHT = 0.9
_POSITION = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
    dtype=np.uint64,
)  # fmt: skip
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class NearDuplicates:
    clusters: list[list[int]]
    """Each cluster's text indices in input order (only clusters of two or more)."""

    def removed(self) -> dict[int, int]:
        """Removed text index → the kept index of its cluster."""
        return {i: c[0] for c in self.clusters for i in c[1:]}


def shingle_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def near_duplicates(
    texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM, ngram: int = NGRAM
) -> NearDuplicates:
    docs = [shingle_words(t) for t in texts]
    shingles, counts = _shingles(docs, ngram)
    sig = _signatures(shingles, counts, num_perm)
    bands, rows = lsh_params(threshold, num_perm)
    candidates = _candidates(sig, counts > 0, bands, rows)
    return NearDuplicates(_components(len(texts), _verified(sig, candidates, threshold)))


def _word_hashes(docs: list[list[str]]) -> tuple[U64, npt.NDArray[np.int64]]:
    flat = [w for doc in docs for w in doc]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(flat))}
    table = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            for w in vocab
        ),
        dtype=np.uint64,
        count=len(vocab),
    )
    ids = np.fromiter((vocab[w] for w in flat), dtype=np.int64, count=len(flat))
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    return table[ids], lengths


def _shingles(docs: list[list[str]], n: int) -> tuple[U64, npt.NDArray[np.int64]]:
    """All shingle hashes grouped by text in order, and the number of shingles of each text."""
    tokens, lengths = _word_hashes(docs)
    weights = _POSITION[np.arange(n) % len(_POSITION)]
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    total = len(tokens)
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    with np.errstate(over="ignore"):
        long = np.flatnonzero(lengths >= n)
        if len(long):
            window = tokens[: total - n + 1] * weights[0]
            for j in range(1, n):
                window = window + tokens[j : total - n + 1 + j] * weights[j]
            doc_of = np.repeat(long, counts[long])
            local = np.concatenate([[0], np.cumsum(counts[long])[:-1]]).astype(np.int64)
            offset = np.arange(len(doc_of)) - np.repeat(local, counts[long])
            out[out_starts[doc_of] + offset] = window[starts[doc_of] + offset]
        for d in np.flatnonzero((lengths > 0) & (lengths < n)):
            part = tokens[starts[d] : starts[d] + lengths[d]] * weights[: lengths[d]]
            out[out_starts[d]] = np.bitwise_xor.reduce(part) if len(part) > 1 else part[0]
    return out, counts


def _signatures(shingles: U64, counts: npt.NDArray[np.int64], num_perm: int) -> U64:
    rng = np.random.default_rng(_SEED)
    a = rng.integers(0, 2**64 - 1, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, 2**64 - 1, num_perm, dtype=np.uint64, endpoint=True)
    sig = np.full((len(counts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    buffer = np.empty((_CHUNK, num_perm), dtype=np.uint64)
    docs = np.flatnonzero(counts > 0)
    ends = np.cumsum(counts[docs])
    first = 0
    while first < len(docs):
        base = ends[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(ends, base + _CHUNK, side="right")))
        block = shingles[base : ends[last - 1]]
        values = (
            buffer[: len(block)]
            if len(block) <= _CHUNK
            else np.empty((len(block), num_perm), np.uint64)
        )
        np.multiply(block[:, None], a, out=values)
        values += b
        high = values.view(np.uint32)[:, _HIGH::2]  # (a·x + b) >> 32, without a pass or a copy
        rel = np.concatenate([[0], ends[first : last - 1] - base]).astype(np.int64)
        sig[docs[first:last]] = np.minimum.reduceat(high, rel, axis=0)
        first = last
    return sig.astype(np.uint64)


@functools.cache
def lsh_params(
    threshold: float, num_perm: int, miss_weight: float = _MISS_WEIGHT
) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted P(false positive) + P(false negative) mass."""
    s_lo = np.linspace(0.0, threshold, 201)
    s_hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - s_lo**r) ** b, s_lo)
            fn = np.trapezoid((1 - s_hi**r) ** b, s_hi)
            err = float((1 - miss_weight) * fp + miss_weight * fn)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def _candidates(sig: U64, usable: npt.NDArray[np.bool_], bands: int, rows: int) -> U64:
    """Candidate pairs (i < j) encoded as i * n + j: texts sharing a band's values."""
    n = len(sig)
    idx = np.flatnonzero(usable)
    found: list[U64] = []
    with np.errstate(over="ignore"):
        for band in range(bands):
            key = np.zeros(len(idx), dtype=np.uint64)
            for col in range(band * rows, (band + 1) * rows):
                key = key * np.uint64(0x100000001B3) + sig[idx, col]
            sorting = np.argsort(key, kind="stable")
            order, sorted_key = idx[sorting], key[sorting]
            same = np.flatnonzero(sorted_key[1:] == sorted_key[:-1]) + 1
            if not len(same):
                continue
            run_start = np.flatnonzero(np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]]))
            head = run_start[np.searchsorted(run_start, same, side="right") - 1]
            # each member pairs with its run's first text and its predecessor in the run
            for other in (order[head], order[same - 1]):
                found.append(other.astype(np.uint64) * np.uint64(n) + order[same].astype(np.uint64))
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.uint64)


def _verified(sig: U64, pairs: U64, threshold: float) -> npt.NDArray[np.int64]:
    n = np.uint64(len(sig))
    left = (pairs // n).astype(np.int64)
    right = (pairs % n).astype(np.int64)
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 4096):
        stop = start + 4096
        agree = (sig[left[start:stop]] == sig[right[start:stop]]).mean(axis=1)
        keep[start:stop] = agree >= threshold
    return np.stack([left[keep], right[keep]], axis=1)


def _components(n: int, pairs: npt.NDArray[np.int64]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in sorted({x for p in pairs.tolist() for x in p}):
        groups.setdefault(find(i), []).append(i)
    return [members for _, members in sorted(groups.items()) if len(members) > 1]
