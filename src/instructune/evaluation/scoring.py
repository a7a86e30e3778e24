"""Classification by option log-likelihood: score every option as the assistant's whole answer.

For an item with prompt P and options o_1..o_K, option k's score is
`log p(o_k + <end-of-turn> | P)`: the option rendered as the assistant turn by the training
template (so `True` is scored exactly as the tokens training taught the model to emit), up to and
including the end-of-turn token. Scoring the end-of-turn token makes the score mean "this is the
whole answer": without it, `Yes` would also collect the mass of `Yes, but...` and a short option
that prefixes a longer one would win for the wrong reason. Trailing template text after the end of
turn (ChatML's newline) is not scored: it is the same for every option.

Prompt and continuation are tokenized separately and concatenated: these are exactly the tokens
`generate` sees (prompt) and would have to emit (continuation), so scoring and generate-and-parse
judge the same event.

`score: sum` (default) is the log-probability of the option; softmaxed over the options it is
p(option | prompt, answer is one of the options), the probability used for ECE and Brier.
`score: mean` divides by the option's token count (length-normalized), for option sets whose
token lengths differ a lot; its softmax is a normalized score rather than a probability.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from instructune.evaluation.loss import sequence_logprobs
from instructune.inference.stops import TemplateLike, encode_text, stop_token_ids
from instructune.models.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from instructune.config import EvalTaskConfig
    from instructune.data.conversation import Conversation, Message
    from instructune.evaluation.compare import TaskOutcome

ScoreMode = Literal["sum", "mean"]

# FLAN-style `OPTIONS:` clause followed by `- option` lines (blank lines allowed before the list).
_OPTIONS_RE = re.compile(r"OPTIONS:\s*\n((?:[ \t]*-[ \t]*[^\n]+(?:\n|$))+)", re.IGNORECASE)


@dataclass
class ClassificationItem:
    prompt_messages: list[Message]
    meta: dict[str, str]
    options: list[str]
    label: str
    source: str
    prompt: str = ""


@dataclass
class ClassificationResult:
    items: list[ClassificationItem]
    scores: list[np.ndarray]
    """Per item: one score per option (sum or mean log-probability, per `mode`)."""
    probs: list[np.ndarray]
    """Per item: softmax of the scores over the item's options."""
    predictions: list[str]
    labels: list[str]
    """The label set, in the order the confusion matrix uses."""
    metrics: dict[str, Any] = field(default_factory=dict)
    item_correct: list[bool] = field(default_factory=list)
    item_brier: list[float] = field(default_factory=list)


def parse_options_clause(text: str) -> list[str] | None:
    """The options of the last `OPTIONS:\\n- a\\n- b` clause in `text`, or None."""
    matches = list(_OPTIONS_RE.finditer(text))
    if not matches:
        return None
    lines = matches[-1].group(1).splitlines()
    options = [line.strip()[1:].strip() for line in lines if line.strip().startswith("-")]
    return options or None


def classification_items(
    convs: Sequence[Conversation], options: Sequence[str] | None = None
) -> list[ClassificationItem]:
    """Items with their option sets: from `options`, else the data's labels, else OPTIONS clauses.

    The true label is the row's label when it has one, else the reference response.
    """
    refs = [_split(c) for c in convs]
    truths = [
        c.label if c.label is not None else ref for c, (_, ref) in zip(convs, refs, strict=True)
    ]
    if options:
        shared: list[str] | None = list(options)
    elif all(c.label is not None for c in convs):
        shared = sorted({t.strip() for t in truths})
    else:
        shared = None
    items = []
    for conv, (prompt_messages, _), truth in zip(convs, refs, truths, strict=True):
        item_options = shared or parse_options_clause(prompt_messages[-1].content)
        if not item_options:
            raise ValueError(
                f"{conv.source}: no options for classification: set the task's `options`, give "
                "the rows a label column, or end the prompt with an `OPTIONS:\\n- a\\n- b` clause"
            )
        label = _match_option(truth, item_options, conv.source)
        items.append(
            ClassificationItem(prompt_messages, dict(conv.meta), item_options, label, conv.source)
        )
    return items


def option_requests(
    items: Sequence[ClassificationItem], template: TemplateLike, tokenizer: Any
) -> list[list[tuple[list[int], list[int]]]]:
    """Per item, per option: (prompt + continuation ids, labels scoring only the continuation)."""
    eot_ids = frozenset(stop_token_ids(template, tokenizer))
    requests = []
    for item in items:
        meta = item.meta or None
        item.prompt = template.render(item.prompt_messages, add_generation_prompt=True, meta=meta)
        prompt_ids = encode_text(tokenizer, item.prompt)
        per_option = []
        for option in item.options:
            cont = _continuation_ids(item, option, template, tokenizer, prompt_ids, eot_ids)
            per_option.append((prompt_ids + cont, [IGNORE_INDEX] * len(prompt_ids) + cont))
        requests.append(per_option)
    return requests


def score_options(
    model: Any,
    tokenizer: Any,
    template: TemplateLike,
    items: Sequence[ClassificationItem],
    batch_size: int = 8,
    mode: ScoreMode = "sum",
) -> list[np.ndarray]:
    """Score every option of every item; all options of all items share length-sorted batches."""
    requests = option_requests(items, template, tokenizer)
    flat = [r for per_item in requests for r in per_item]
    from instructune.models import pad_token_id

    logps = sequence_logprobs(model, flat, pad_token_id(tokenizer), batch_size=batch_size)
    scores, k = [], 0
    for per_item in requests:
        row = [logps[k + j] for j in range(len(per_item))]
        k += len(per_item)
        scores.append(np.array([lp.sum() if mode == "sum" else lp.mean() for lp in row]))
    return scores


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max())
    return np.asarray(shifted / shifted.sum(), dtype=np.float64)


def classify(items: Sequence[ClassificationItem], scores: list[np.ndarray]) -> ClassificationResult:
    """Predict the argmax option for each item from its option scores (`score_options`) and
    compute the classification metrics."""
    probs = [softmax(s) for s in scores]
    preds = [it.options[int(np.argmax(p))] for it, p in zip(items, probs, strict=True)]
    result = ClassificationResult(list(items), scores, probs, preds, label_set(items))
    classification_metrics(result)
    return result


def label_set(items: Sequence[ClassificationItem]) -> list[str]:
    """All options in first-seen order (the option order when every item shares one set)."""
    seen: dict[str, None] = {}
    for item in items:
        seen.update(dict.fromkeys(item.options))
    return list(seen)


def classification_metrics(result: ClassificationResult) -> dict[str, Any]:
    """accuracy, macro_f1, confusion_matrix, labels, ece, brier, n (+ per-item correct/brier)."""
    from instructune.evaluation.calibration import expected_calibration_error
    from instructune.evaluation.metrics import accuracy, confusion_matrix, macro_f1

    truths = [it.label for it in result.items]
    true_idx = [it.options.index(it.label) for it in result.items]
    result.item_correct = [p == t for p, t in zip(result.predictions, truths, strict=True)]
    # Brier per item (Σ_k (p_k - 1[k=y])²): items may carry different option sets, and the paired
    # bootstrap needs per-item values anyway. Their mean is the multi-class Brier score.
    result.item_brier = [
        float(np.sum((p - np.eye(len(p))[y]) ** 2))
        for p, y in zip(result.probs, true_idx, strict=True)
    ]
    confidences = [float(p.max()) for p in result.probs]
    result.metrics = {
        "accuracy": accuracy(truths, result.predictions),
        "macro_f1": macro_f1(truths, result.predictions, result.labels),
        "ece": expected_calibration_error(confidences, result.item_correct, n_bins=10),
        "brier": float(np.mean(result.item_brier)),
        "confusion_matrix": confusion_matrix(truths, result.predictions, result.labels),
        "labels": list(result.labels),
        "n": len(truths),
    }
    return result.metrics


def _split(conv: Conversation) -> tuple[list[Message], str]:
    turns = conv.assistant_indices()
    if not turns or not any(m.role == "user" for m in conv.messages[: turns[-1]]):
        raise ValueError(f"{conv.source}: a classification item needs a user turn and a response")
    return conv.messages[: turns[-1]], conv.messages[turns[-1]].content


def _match_option(truth: str, options: Sequence[str], source: str) -> str:
    if truth in options:
        return truth
    folded = {o.strip().casefold(): o for o in options}
    found = folded.get(truth.strip().casefold())
    if found is None:
        raise ValueError(f"{source}: label {truth!r} is not one of the options {list(options)}")
    return found


def _continuation_ids(
    item: ClassificationItem,
    option: str,
    template: TemplateLike,
    tokenizer: Any,
    prompt_ids: list[int],
    eot_ids: frozenset[int],
) -> list[int]:
    """Ids of `option` as the assistant turn, through the first end-of-turn token.

    Cut like training's trained span (`data.tokenize`): from the end of the generation prompt up
    to and including the first end-of-turn token. The ids come from tokenizing the whole render,
    as training does; tokenizing the continuation alone is the fallback for the rare template
    whose prompt tokens aren't a prefix of the answered render's tokens.
    """
    from instructune.data.conversation import Message

    full = template.render(
        [*item.prompt_messages, Message("assistant", option)], meta=item.meta or None
    )
    if not full.startswith(item.prompt):
        raise ValueError(
            f"{item.source}: the template's generation prompt is not a prefix of the answered "
            "conversation, so option scores would not match what the model was trained on"
        )
    full_ids = encode_text(tokenizer, full)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        cont = full_ids[len(prompt_ids) :]
    else:
        cont = encode_text(tokenizer, full[len(item.prompt) :])
    cut = next((k for k, t in enumerate(cont) if t in eot_ids), None)
    if cut is None:  # a template that ends turns with plain text: the answer still ends at EOS
        return [*cont, int(tokenizer.eos_token_id)]
    return cont[: cut + 1]


def evaluate_classification(
    model: Any,
    tokenizer: Any,
    template: TemplateLike,
    items: Sequence[ClassificationItem],
    task: EvalTaskConfig,
    batch_size: int,
) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """One model on one classification task: outcome for metrics.json and prediction records."""
    from instructune.evaluation.compare import TaskOutcome

    res = classify(items, score_options(model, tokenizer, template, items, batch_size, task.score))
    per_item = {
        "correct": [float(c) for c in res.item_correct],
        "brier": res.item_brier,
        "confidence": [float(p.max()) for p in res.probs],
    }
    records = [
        {
            "task": task.name,
            "type": "classification",
            "source": it.source,
            "prompt": it.prompt,
            "reference": it.label,
            "output": pred,
            "correct": ok,
            "probs": {o: round(float(p), 6) for o, p in zip(it.options, probs, strict=True)},
        }
        for it, pred, ok, probs in zip(
            items, res.predictions, res.item_correct, res.probs, strict=True
        )
    ]
    return TaskOutcome(task.name, "classification", res.metrics, per_item, "accuracy"), records
