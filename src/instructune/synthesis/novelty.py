"""The ROUGE-L novelty filter of Self-Instruct, fast and with `rouge_score`'s exact decisions.

Self-Instruct drops a generated instruction whose ROUGE-L F-measure against any instruction already
in the pool exceeds 0.7. The reference computes `rouge_scorer.RougeScorer(["rougeL"]).score` against
every pool entry, an O(m·n) Python DP per pair. Here the pool is kept as token-id arrays with an
inverted index, and a new instruction is scored in three vectorized steps:

1. an upper bound per pool entry: LCS ≤ the multiset overlap of the two token bags, summed from the
   postings of the query's tokens;
2. exact LCS (Hyyrö's bit-parallel algorithm, one uint64 lane per 64 query tokens, all candidates at
   once in numpy) only for the entries whose bound can still reach the top-k exact scores;
3. the F-measure with the same floating-point operations as `rouge_score`, so a score on the
   threshold is decided the same way.

Tokenization is `rouge_score`'s default tokenizer without stemming (lowercase, runs of [a-z0-9]).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

import numpy as np

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_PAD = -1
# Bounds are compared with this slack so that float rounding in the bound never prunes an entry
# whose exact score ties the cut-off.
_SLACK = 1e-9


def rouge_tokens(text: str) -> list[str]:
    """`rouge_score.tokenize.tokenize(text, None)`: lowercase, non-alphanumerics split tokens."""
    return _TOKEN_RE.findall(text.lower())


def _rouge_f_array(lcs: np.ndarray, n_pred: int, n_target: np.ndarray) -> np.ndarray:
    """ROUGE-L F-measure per candidate, in `rouge_score`'s exact operation order."""
    lcs = lcs.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty texts score 0, as in rouge_score
        precision = lcs / n_pred
        recall = lcs / n_target
        denom = precision + recall
        f = 2 * precision * recall / denom
    return np.where(denom > 0, f, 0.0)


def lcs_lengths(query: np.ndarray, candidates: np.ndarray, vocab_size: int) -> np.ndarray:
    """LCS length of `query` (token ids) against each row of `candidates` (padded with -1).

    Bit-parallel LCS (Hyyrö 2004): V starts all ones over the query positions; for each candidate
    token with match mask M, U = V & M and V = (V + U) | (V & ~M); the LCS is the number of zero
    bits left in V. The addition carries across 64-bit words for queries longer than 64 tokens.
    """
    m = len(query)
    n_cand = candidates.shape[0]
    if m == 0 or n_cand == 0:
        return np.zeros(n_cand, dtype=np.int64)
    words = (m + 63) // 64
    # Row `vocab_size` (reached by the pad id -1) stays zero: a pad position changes nothing.
    table = np.zeros((vocab_size + 1, words), dtype=np.uint64)
    for pos, tok in enumerate(query.tolist()):
        if tok >= 0:
            table[tok, pos // 64] |= np.uint64(1 << (pos % 64))
    v = np.full((n_cand, words), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for j in range(candidates.shape[1]):
        match = table[candidates[:, j]]
        u = v & match
        keep = v & ~match
        if words == 1:
            v = (v + u) | keep
            continue
        carry = np.zeros(n_cand, dtype=np.uint64)
        total = np.empty_like(v)
        for w in range(words):
            s = v[:, w] + u[:, w]
            c1 = s < v[:, w]
            s2 = s + carry
            c2 = s2 < s
            total[:, w] = s2
            carry = (c1 | c2).astype(np.uint64)
        v = total | keep
    last_bits = m - 64 * (words - 1)
    mask = np.full(words, np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if last_bits < 64:
        mask[-1] = np.uint64((1 << last_bits) - 1)
    ones = np.bitwise_count(v & mask).sum(axis=1, dtype=np.int64)
    return m - ones


@dataclass(frozen=True)
class Similar:
    """A pool instruction and its ROUGE-L F-measure against the checked one."""

    index: int
    text: str
    score: float


@dataclass(frozen=True)
class NoveltyCheck:
    max_score: float
    most_similar: list[Similar]


class NoveltyIndex:
    """A growing pool of instructions answering "how similar is this one to the closest ones?"."""

    def __init__(self, top_k: int = 10) -> None:
        self.top_k = top_k
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._lengths = np.zeros(64, dtype=np.int64)
        self._tokens = np.full((64, 16), _PAD, dtype=np.int32)
        self._postings: dict[int, tuple[array, array]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def _ids(self, tokens: list[str], grow: bool) -> np.ndarray:
        if grow:
            return np.array([self._vocab.setdefault(t, len(self._vocab)) for t in tokens], np.int32)
        return np.array([self._vocab.get(t, _PAD) for t in tokens], np.int32)

    def add(self, text: str) -> None:
        ids = self._ids(rouge_tokens(text), grow=True)
        row = len(self.texts)
        if row == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
            self._tokens = np.concatenate([self._tokens, np.full_like(self._tokens, _PAD)])
        if len(ids) > self._tokens.shape[1]:
            wider = np.full((self._tokens.shape[0], len(ids)), _PAD, dtype=np.int32)
            wider[:, : self._tokens.shape[1]] = self._tokens
            self._tokens = wider
        self._tokens[row, : len(ids)] = ids
        self._lengths[row] = len(ids)
        uniq, counts = np.unique(ids, return_counts=True)
        for tok, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            rows, cnts = self._postings.setdefault(tok, (array("i"), array("i")))
            rows.append(row)
            cnts.append(count)
        self.texts.append(text)

    def _overlap(self, ids: np.ndarray) -> np.ndarray:
        overlap = np.zeros(len(self.texts), dtype=np.int64)
        uniq, counts = np.unique(ids[ids >= 0], return_counts=True)
        for tok, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            rows, cnts = self._postings[tok]
            hits = np.minimum(np.frombuffer(cnts, np.int32), count)
            overlap[np.frombuffer(rows, np.int32)] += hits
        return overlap

    def _exact(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        width = int(self._lengths[rows].max()) if len(rows) else 0
        cands = self._tokens[rows, :width]
        lcs = lcs_lengths(ids, cands, len(self._vocab))
        return _rouge_f_array(lcs, len(ids), self._lengths[rows])

    def check(self, text: str, top_k: int | None = None) -> NoveltyCheck:
        """The max ROUGE-L F against the pool and the `top_k` most similar entries (exact)."""
        k = max(self.top_k if top_k is None else top_k, 1)
        n = len(self.texts)
        ids = self._ids(rouge_tokens(text), grow=False)
        if n == 0 or len(ids) == 0:
            return NoveltyCheck(0.0, [])
        bound = _rouge_f_array(self._overlap(ids), len(ids), self._lengths[:n])
        order = np.lexsort((np.arange(n), -bound))
        first = order[: max(4 * k, 64)]
        scores = {int(r): s for r, s in zip(first, self._exact(ids, first).tolist(), strict=True)}
        if len(first) < n:
            cut = sorted(scores.values(), reverse=True)[k - 1] if len(scores) >= k else 0.0
            rest = order[len(first) :]
            rest = rest[bound[rest] >= cut - _SLACK]
            if len(rest):
                scores.update(zip(rest.tolist(), self._exact(ids, rest).tolist(), strict=True))
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        similar = [Similar(r, self.texts[r], s) for r, s in best if s > 0]
        return NoveltyCheck(best[0][1] if best else 0.0, similar)

    def admit(self, text: str, threshold: float) -> tuple[bool, NoveltyCheck]:
        """Add `text` unless its ROUGE-L against a pool entry is > `threshold` (Self-Instruct)."""
        result = self.check(text)
        novel = result.max_score <= threshold
        if novel:
            self.add(text)
        return novel, result
