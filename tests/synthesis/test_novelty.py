"""The fast ROUGE-L novelty index decides exactly as the `rouge_score` loop it replaces."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rouge_score import rouge_scorer, tokenize

from instructune.synthesis.novelty import NoveltyIndex, lcs_lengths, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _dp_lcs(a: list[int], b: list[int]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            same = a[i - 1] == b[j - 1]
            table[i][j] = table[i - 1][j - 1] + 1 if same else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World! It's 3:45pm — naïve café déjà-vu",
        "  multiple   spaces\tand\nnewlines ",
        "UPPER lower MiXeD 123abc a1b2",
        "İstanbul Kelvin \u212a ß straße",
        "",
        "!!!",
    ],
)
def test_tokenizer_matches_rouge_score(text: str) -> None:
    assert rouge_tokens(text) == tokenize.tokenize(text, None)


def test_bit_parallel_lcs_matches_dp_across_word_boundaries() -> None:
    rng = random.Random(0)
    for m in (1, 5, 63, 64, 65, 130, 200):
        query = [rng.randrange(6) for _ in range(m)]
        cands = [[rng.randrange(6) for _ in range(rng.randrange(0, 150))] for _ in range(20)]
        width = max(len(c) for c in cands)
        padded = np.full((len(cands), width), -1, dtype=np.int32)
        for i, c in enumerate(cands):
            padded[i, : len(c)] = c
        got = lcs_lengths(np.array(query, dtype=np.int32), padded, 6)
        assert got.tolist() == [_dp_lcs(query, c) for c in cands]


def test_decisions_scores_and_top_k_equal_rouge_score_loop() -> None:
    rng = random.Random(1)
    words = [
        "a",
        "b",
        "c",
        "d",
        "e",
        "the",
        "of",
        "to",
        "write",
        "list",
        "explain",
        "poem",
        "story",
    ]
    index = NoveltyIndex(top_k=5)
    pool: list[str] = []
    for _ in range(250):
        text = " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 4, 9, 20, 70])))
        ref = [SCORER.score(p, text)["rougeL"].fmeasure for p in pool]
        result = index.check(text)
        assert result.max_score == max(ref, default=0.0)
        expected = sorted(((-s, j) for j, s in enumerate(ref) if s > 0))[:5]
        assert [(x.index, x.score) for x in result.most_similar] == [(j, -s) for s, j in expected]
        novel, _ = index.admit(text, 0.7)
        assert novel == (max(ref, default=0.0) <= 0.7)
        if novel:
            pool.append(text)
    assert 30 < len(pool) < 250  # both outcomes were exercised


def test_threshold_is_strict_and_scores_equal_rouge_score_float() -> None:
    # LCS 7 of 10 + 10 tokens: F is 0.7 up to rounding, decided as rouge_score decides it.
    a = "w1 w2 w3 w4 w5 w6 w7 x1 x2 x3"
    b = "w1 w2 w3 w4 w5 w6 w7 y1 y2 y3"
    ref = SCORER.score(a, b)["rougeL"].fmeasure
    index = NoveltyIndex()
    index.add(a)
    novel, check = index.admit(b, 0.7)
    assert check.max_score == ref
    assert novel == (ref <= 0.7)
