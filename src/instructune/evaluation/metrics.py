"""Pure metric functions for generation and classification evaluation.

Generation metrics compare one predicted string with one reference string and
return a score in ``[0, 1]``. Classification metrics operate on parallel sequences of
hashable labels.

All functions are pure (no I/O, no global state) so they can be unit-tested
against hand-computed values and reused by any evaluation driver.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

__all__ = [
    "GENERATION_METRICS",
    "accuracy",
    "confusion_matrix",
    "exact_match",
    "lcs_length",
    "macro_f1",
    "normalize_answer",
    "rouge_l",
    "token_f1",
]

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# Same tokenisation as rouge_score's default tokenizer without stemming:
# lowercase, then keep maximal runs of ASCII letters/digits.
_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------- generation


def normalize_answer(s: str) -> str:
    """Normalize a string the SQuAD way.

    Lowercases, removes ASCII punctuation, removes the articles ``a``/``an``/``the``
    and collapses whitespace to single spaces (stripping both ends).
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, ref: str) -> float:
    """Return 1.0 if ``pred`` and ``ref`` are equal after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token-level F1 between normalized ``pred`` and ``ref`` tokens.

    Overlap is counted with multiplicity (bag of tokens). If either side has no
    tokens the score is 1.0 when both are empty and 0.0 otherwise (SQuAD v2 rule).
    """
    pred_tokens = normalize_answer(pred).split()
    ref_tokens = normalize_answer(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2.0 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(n·m) DP)."""
    if len(a) < len(b):
        # Keep the DP row over the shorter sequence: O(min(n, m)) memory.
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for tok_a in a:
        curr = [0] * (len(b) + 1)
        for j, tok_b in enumerate(b, start=1):
            if tok_a == tok_b:
                curr[j] = prev[j - 1] + 1
            else:
                curr[j] = max(prev[j], curr[j - 1])
        prev = curr
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (β = 1) between ``pred`` and ``ref``.

    Tokens are maximal runs of ``[a-z0-9]`` after lowercasing, no stemming, which
    matches ``rouge_score.rouge_scorer.RougeScorer(['rougeL'])``. One deliberate
    difference: when both sides have no tokens we return 1.0 (like
    :func:`token_f1`), whereas ``rouge_score`` returns 0.0. If exactly one side
    is empty the score is 0.0.
    """
    pred_tokens = _ROUGE_TOKEN_RE.findall(pred.lower())
    ref_tokens = _ROUGE_TOKEN_RE.findall(ref.lower())
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    lcs = lcs_length(pred_tokens, ref_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(pred_tokens)
    recall = lcs / len(ref_tokens)
    return 2.0 * precision * recall / (precision + recall)


GENERATION_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "f1": token_f1,
    "rouge_l": rouge_l,
}
"""Registry of per-example generation metrics: name → ``fn(pred, ref) -> float``."""


# ----------------------------------------------------------------------- classification


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of positions where ``y_pred`` equals ``y_true``."""
    _check_parallel(y_true, y_pred, "y_true", "y_pred")
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def macro_f1(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    labels: Sequence[Hashable],
) -> float:
    """Unweighted mean of per-class F1 over ``labels``.

    Convention (same as scikit-learn's ``f1_score(average="macro",
    zero_division=0)`` with explicit ``labels``): per class, precision or recall
    with a zero denominator counts as 0, so a class in ``labels`` that is neither
    present in ``y_true`` nor predicted gets F1 = 0 and still pulls the average
    down. Classes absent from ``labels`` are not averaged, but a prediction of
    such a class on an example whose true class is in ``labels`` still counts as
    a false negative for that true class.
    """
    _check_parallel(y_true, y_pred, "y_true", "y_pred")
    _check_labels(labels)
    f1s = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == label and p != label for t, p in zip(y_true, y_pred, strict=True))
        # 2TP / (2TP + FP + FN) equals 2PR / (P + R) and is 0 when TP == 0.
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return sum(f1s) / len(f1s)


def confusion_matrix(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    labels: Sequence[Hashable],
) -> list[list[int]]:
    """Confusion matrix with rows = true label, columns = predicted label, in ``labels`` order.

    Like scikit-learn, pairs whose true or predicted label is not in ``labels``
    are not counted; add an explicit "invalid" label to keep unparseable
    predictions visible.
    """
    _check_parallel(y_true, y_pred, "y_true", "y_pred")
    _check_labels(labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


# ---------------------------------------------------------------------------- helpers


def _check_parallel(a: Sequence[object], b: Sequence[object], name_a: str, name_b: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` are non-empty and of equal length."""
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {len(a)} and {len(b)}"
        )
    if len(a) == 0:
        raise ValueError(f"{name_a} and {name_b} must be non-empty")


def _check_labels(labels: Sequence[Hashable]) -> None:
    """Raise ValueError on an empty or duplicated label list."""
    if len(labels) == 0:
        raise ValueError("labels must be non-empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")
