"""Tests for instructune.evaluation.metrics against hand-computed values."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from instructune.evaluation.metrics import (
    GENERATION_METRICS,
    accuracy,
    confusion_matrix,
    exact_match,
    lcs_length,
    macro_f1,
    normalize_answer,
    rouge_l,
    token_f1,
)

# --------------------------------------------------------------------------- normalize / EM


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("  theatre  ", "theatre"),  # "the" inside a word is not an article
        ("A.", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match() -> None:
    assert exact_match("The Cat.", "cat") == 1.0
    assert exact_match("cat", "dog") == 0.0
    assert exact_match("", "the") == 1.0  # both normalize to ""


# --------------------------------------------------------------------------- token F1


def test_token_f1_partial_overlap() -> None:
    # pred tokens [cat, sat, on, mat] (4), ref tokens [cat, sat] (2), common = 2
    # P = 2/4, R = 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)


def test_token_f1_counts_multiplicity() -> None:
    # pred [cat, cat, cat], ref [cat, dog]; common = min(3, 1) = 1
    # P = 1/3, R = 1/2 -> F1 = 2 * (1/6) / (5/6) = 0.4
    assert token_f1("cat cat cat", "cat dog") == pytest.approx(0.4)


def test_token_f1_edge_cases() -> None:
    assert token_f1("", "the") == 1.0  # both empty after normalization
    assert token_f1("", "cat") == 0.0
    assert token_f1("cat", "") == 0.0
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("Cat!", "the cat") == 1.0


# --------------------------------------------------------------------------- ROUGE-L


def test_lcs_length_textbook() -> None:
    # CLRS example: LCS(ABCBDAB, BDCABA) = 4 (e.g. BCBA)
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length(list("BDCABA"), list("ABCBDAB")) == 4
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_hand_values() -> None:
    # pred 7 tokens, ref 6 tokens, LCS = "the cat was under the bed" = 6
    # P = 6/7, R = 6/6 -> F = 2 * (6/7) / (13/7) = 12/13
    assert rouge_l("the cat was found under the bed", "the cat was under the bed") == (
        pytest.approx(12 / 13)
    )
    # LCS("the gunman killed police", "police killed the gunman") = 2 ("the gunman")
    # P = R = 2/4 -> F = 0.5
    assert rouge_l("the gunman killed police", "police killed the gunman") == pytest.approx(0.5)


def test_rouge_l_empty_conventions() -> None:
    assert rouge_l("", "") == 1.0
    assert rouge_l("!!!", "...") == 1.0  # no alphanumeric tokens on either side
    assert rouge_l("", "cat") == 0.0
    assert rouge_l("cat", "") == 0.0


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("the cat was found under the bed", "the cat was under the bed"),
        ("police killed the gunman", "the gunman killed police"),
        ("Hello, World! It's 2024.", "hello world its 2024"),
        ("A quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
        ("running runners ran", "run runner running"),  # no stemming on either side
        ("naïve café déjà-vu", "naive cafe deja vu"),  # non-ASCII letters split tokens
        ("x y z", "a b c"),
        ("one two three two one", "two one two three"),
    ],
)
def test_rouge_l_matches_rouge_score(pred: str, ref: str) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = scorer.score(ref, pred)["rougeL"].fmeasure  # score(target, prediction)
    assert rouge_l(pred, ref) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- registry


def test_registry_names() -> None:
    assert set(GENERATION_METRICS) == {"exact_match", "f1", "rouge_l"}
    assert GENERATION_METRICS["f1"] is token_f1


# --------------------------------------------------------------------------- classification

Y_TRUE = ["a", "a", "b", "b", "c"]
Y_PRED = ["a", "b", "b", "b", "a"]


def test_accuracy() -> None:
    # matches at positions 0, 2, 3 -> 3/5
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert accuracy([1], [1]) == 1.0


def test_macro_f1_hand_values() -> None:
    # a: TP=1 (pos 0), FP=1 (pos 4), FN=1 (pos 1) -> 2*1/(2+1+1) = 0.5
    # b: TP=2 (pos 2,3), FP=1 (pos 1), FN=0     -> 4/5 = 0.8
    # c: TP=0, FP=0, FN=1                        -> 0
    # d: never present nor predicted             -> 0 (zero_division=0 convention)
    assert macro_f1(Y_TRUE, Y_PRED, ["a", "b", "c"]) == pytest.approx(1.3 / 3)
    assert macro_f1(Y_TRUE, Y_PRED, ["a", "b", "c", "d"]) == pytest.approx(1.3 / 4)


def test_macro_f1_prediction_outside_labels_is_false_negative() -> None:
    # class x: TP=1, FN=1 (predicted "junk"), FP=0 -> 2/(2+0+1) = 2/3
    assert macro_f1(["x", "x"], ["x", "junk"], ["x"]) == pytest.approx(2 / 3)


def test_confusion_matrix() -> None:
    # rows = true (a, b, c), cols = predicted
    # true a: pred a once, pred b once; true b: pred b twice; true c: pred a once
    assert confusion_matrix(Y_TRUE, Y_PRED, ["a", "b", "c"]) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # pairs with a label outside `labels` are ignored (sklearn convention)
    assert confusion_matrix(["a", "a"], ["a", "junk"], ["a"]) == [[1]]


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match="same length"):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="same length"):
        macro_f1(["a"], [], ["a"])
    with pytest.raises(ValueError, match="labels must be non-empty"):
        macro_f1(["a"], ["a"], [])
    with pytest.raises(ValueError, match="unique"):
        confusion_matrix(["a"], ["a"], ["a", "a"])
