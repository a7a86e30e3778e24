"""Eval loss: the training loss definition, token-weighted, batching-independent."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from instructune.evaluation.loss import LossResult, evaluate_loss, sequence_logprobs


def _examples(n: int, vocab: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = 6 + 5 * i % 17
        ids = rng.integers(4, vocab, size=length)
        labels = ids.copy()
        labels[: length // 2] = -100  # prompt half not trained
        out.append((ids, labels))
    return out


def test_single_example_equals_hf_loss(tiny_model: Any) -> None:
    ids, labels = _examples(1, tiny_model.config.vocab_size)[0]
    with torch.no_grad():
        ref = tiny_model(
            torch.tensor(np.array([ids])), labels=torch.tensor(np.array([labels]))
        ).loss.item()
    assert LossResult.from_logprobs(
        sequence_logprobs(tiny_model, [(ids, labels)], pad_id=3)
    ).loss == pytest.approx(ref, abs=1e-5)


def test_token_weighted_mean_independent_of_batching(tiny_model: Any) -> None:
    examples = _examples(7, tiny_model.config.vocab_size)
    total, count = 0.0, 0
    for ids, labels in examples:  # reference: unbatched, summed over every trained token
        with torch.no_grad():
            n = int((labels[1:] != -100).sum())
            loss = tiny_model(
                torch.tensor(np.array([ids])), labels=torch.tensor(np.array([labels]))
            ).loss.item()
        total, count = total + loss * n, count + n
    for batch_size in (1, 3, 8):
        res = LossResult.from_logprobs(
            sequence_logprobs(tiny_model, examples, pad_id=3, batch_size=batch_size)
        )
        assert res.loss == pytest.approx(total / count, abs=1e-5)
        assert res.n_tokens == count
        assert res.perplexity == pytest.approx(math.exp(res.loss))
    per_item = sequence_logprobs(tiny_model, examples, pad_id=3, batch_size=3)
    assert [lp.size for lp in per_item] == res.item_tokens


def test_no_trained_tokens_is_an_error(tiny_model: Any) -> None:
    ids = np.arange(4, 12)
    with pytest.raises(ValueError, match="no trained tokens"):
        LossResult.from_logprobs(
            sequence_logprobs(tiny_model, [(ids, np.full_like(ids, -100))], pad_id=3)
        )


def test_evaluate_loss_outcome(tiny_model: Any) -> None:
    examples = _examples(3, tiny_model.config.vocab_size)
    outcome, records = evaluate_loss(tiny_model, examples, ["a", "b", "c"], "held", 3, 2)
    assert set(outcome.metrics) == {"loss", "perplexity", "n_tokens", "n"}
    assert outcome.main_metric == "loss" and len(outcome.per_item["loss"]) == 3
    assert [r["source"] for r in records] == ["a", "b", "c"]
