"""Option scoring: batched scores equal direct unpadded forwards; option sources; metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from instructune.data.conversation import Conversation, Message
from instructune.data.templates import load_template
from instructune.evaluation.scoring import (
    ClassificationItem,
    ClassificationResult,
    classification_items,
    classification_metrics,
    classify,
    option_requests,
    parse_options_clause,
    score_options,
)


def _conv(i: int, label: str | None, prompt: str | None = None) -> Conversation:
    text = prompt or f"Is fox {i} quick? " + "The quick brown fox. " * (i % 4)
    answer = label or "True"
    return Conversation([Message("user", text), Message("assistant", answer)], f"t:{i}", label)


def _direct_logprob(model: Any, ids: list[int], labels: list[int]) -> float:
    """Reference: one unbatched, unpadded forward of the whole sequence through model(...)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    keep = torch.tensor(labels[1:]) != -100
    return float(logp[torch.arange(len(targets)), targets][keep].sum())


def test_parse_options_clause() -> None:
    text = "Decide.\n\nOPTIONS:\n- True\n- False"
    assert parse_options_clause(text) == ["True", "False"]
    assert parse_options_clause("OPTIONS:\n-  yes \n- no\nAnswer:") == ["yes", "no"]
    assert parse_options_clause("no clause here") is None


def test_options_from_config_labels_or_clause() -> None:
    convs = [_conv(0, "b"), _conv(1, "a")]
    assert classification_items(convs, ["b", "a"])[0].options == ["b", "a"]
    assert classification_items(convs)[0].options == ["a", "b"]  # distinct labels, sorted
    clause = [_conv(0, None, "Pick.\n\nOPTIONS:\n- True\n- False")]
    items = classification_items(clause)
    assert items[0].options == ["True", "False"] and items[0].label == "True"
    with pytest.raises(ValueError, match="no options"):
        classification_items([_conv(0, None, "no clause")])
    with pytest.raises(ValueError, match="not one of the options"):
        classification_items([_conv(0, "maybe")], ["yes", "no"])


def test_label_matches_option_case_insensitively() -> None:
    # formats.py lower-cases boolean labels ("true"); options keep the data's spelling
    items = classification_items([_conv(0, "true")], ["True", "False"])
    assert items[0].label == "True"


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_batched_scores_equal_direct_forward(tiny_model: Any, pad_is_eos: bool) -> None:
    from ..tiny import tiny_tokenizer

    tok = tiny_tokenizer(pad_is_eos=pad_is_eos)
    template = load_template("chat", tok)
    items = classification_items(
        [_conv(i, "True" if i % 2 else "False") for i in range(7)], ["True", "False", "maybe not"]
    )
    requests = option_requests(items, template, tok)
    scores = score_options(tiny_model, tok, template, items, batch_size=4)
    for per_item, item_scores in zip(requests, scores, strict=True):
        for (ids, labels), score in zip(per_item, item_scores, strict=True):
            assert score == pytest.approx(_direct_logprob(tiny_model, ids, labels), abs=1e-4)


def test_continuation_is_option_plus_end_of_turn(tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    items = classification_items([_conv(0, "True")], ["True", "False"])
    (ids, labels), _ = option_requests(items, template, tiny_tok)[0]
    scored = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    im_end = tiny_tok.convert_tokens_to_ids("<|im_end|>")
    assert scored[-1] == im_end and ids[-1] == im_end  # the "\n" after <|im_end|> is not scored
    assert tiny_tok.decode(scored[:-1]) == "True"
    prompt_ids = tiny_tok(items[0].prompt, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # exactly the tokens generate() would see


def test_alpaca_template_scores_option_then_eos(tiny_tok: Any) -> None:
    template = load_template("alpaca", tiny_tok)
    items = classification_items([_conv(0, "False")], ["True", "False"])
    (ids, labels), _ = option_requests(items, template, tiny_tok)[0]
    scored = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert scored[-1] == tiny_tok.eos_token_id
    assert tiny_tok.decode(scored[:-1]) == "True"


def test_mean_mode_divides_by_token_count(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    items = classification_items([_conv(1, "True")], ["True", "quick brown fox"])
    sums = score_options(tiny_model, tiny_tok, template, items, mode="sum")[0]
    means = score_options(tiny_model, tiny_tok, template, items, mode="mean")[0]
    counts = [
        sum(lab != -100 for lab in r[1]) for r in option_requests(items, template, tiny_tok)[0]
    ]
    np.testing.assert_allclose(means, sums / np.array(counts), rtol=1e-9)


def test_classify_metrics_and_probabilities(tiny_model: Any, tiny_tok: Any) -> None:
    template = load_template("chat", tiny_tok)
    items = classification_items([_conv(i, "True" if i % 3 else "False") for i in range(9)])
    res = classify(items, score_options(tiny_model, tiny_tok, template, items, batch_size=3))
    probs = np.stack(res.probs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    onehot = np.eye(probs.shape[1])[[it.options.index(it.label) for it in items]]
    assert res.metrics["brier"] == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    assert set(res.metrics) == {
        "accuracy",
        "macro_f1",
        "ece",
        "brier",
        "confusion_matrix",
        "labels",
        "n",
    }
    assert res.metrics["labels"] == ["False", "True"] and res.metrics["n"] == 9
    assert sum(map(sum, res.metrics["confusion_matrix"])) == 9
    assert res.metrics["accuracy"] == pytest.approx(np.mean(res.item_correct))


def test_brier_by_hand_two_items_three_options() -> None:
    # item 1 p=[.7,.2,.1], label a: (.3)^2 + .2^2 + .1^2 = .14
    # item 2 p=[.2,.5,.3], label c: .2^2 + .5^2 + (.7)^2 = .78; mean .46
    # a perfect item scores 0, all mass on a wrong option 1 + 1 = 2
    probs = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    labels = ["a", "c", "b", "a"]
    items = [ClassificationItem([], {}, ["a", "b", "c"], label, "t") for label in labels]
    predictions = ["abc"[int(np.argmax(p))] for p in probs]
    result = ClassificationResult(
        items, [], [np.array(p) for p in probs], predictions, ["a", "b", "c"]
    )
    metrics = classification_metrics(result)
    assert result.item_brier == pytest.approx([0.14, 0.78, 0.0, 2.0])
    assert metrics["brier"] == pytest.approx((0.14 + 0.78 + 0.0 + 2.0) / 4)
    assert result.item_correct == [True, False, True, False]
