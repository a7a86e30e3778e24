"""Eval loss and perplexity over the trained tokens of held-out examples.

The loss is defined exactly as in training: mean next-token cross-entropy over the positions whose
label is not -100 (the trained targets), token-weighted over the whole set (not a mean of
per-example means), so `eval loss == train loss` on the same tokens. The same per-token
log-probability pass also scores classification options (`scoring.py`).

The forward is training's own (`models.logprobs.token_losses`): only the hidden states of trained
positions go through the LM head, in fp32 chunks, so the `positions × vocab` logits never exist
for the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from instructune.models.labels import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from instructune.evaluation.compare import TaskOutcome


TokenSeq = Sequence[int] | np.ndarray


@dataclass
class LossResult:
    """Token-weighted loss over a set, plus per-item numbers for paired tests."""

    loss: float
    perplexity: float
    n_tokens: int
    item_loss: list[float]
    """Mean loss over each item's trained tokens (the per-item value the bootstrap pairs)."""
    item_tokens: list[int]

    def metrics(self) -> dict[str, float | int]:
        return {"loss": self.loss, "perplexity": self.perplexity, "n_tokens": self.n_tokens}

    @classmethod
    def from_logprobs(cls, logps: Sequence[np.ndarray]) -> LossResult:
        """Token-weighted mean NLL and perplexity over all trained targets, from each item's
        per-token log-probs (`sequence_logprobs`)."""
        totals = [float(-lp.sum()) for lp in logps]
        counts = [int(lp.size) for lp in logps]
        n_tokens = sum(counts)
        if n_tokens == 0:
            raise ValueError("no trained tokens in the loss set: every label is -100")
        loss = sum(totals) / n_tokens
        return cls(
            loss=loss,
            perplexity=math.exp(min(loss, 700.0)),  # exp overflows a float beyond ~709
            n_tokens=n_tokens,
            item_loss=[t / c if c else 0.0 for t, c in zip(totals, counts, strict=True)],
            item_tokens=counts,
        )


def sequence_logprobs(
    model: Any,
    sequences: Sequence[tuple[TokenSeq, TokenSeq]],
    pad_id: int,
    batch_size: int = 8,
    chunk_size: int = 1024,
    max_batch_tokens: int | None = None,
) -> list[np.ndarray]:
    """Log-probabilities of each sequence's labelled tokens, one float64 array per sequence.

    `sequences` are `(input_ids, labels)` pairs aligned the Hugging Face way (labels[t] is the
    target for input_ids[t], -100 = not scored); position t is predicted from the prefix before it.
    Sequences are sorted by length and right-padded per batch: with a causal mask real tokens
    never attend to padding on their right, so no position ids need fixing and the numbers equal
    an unpadded forward. Results come back in input order.
    """
    import torch

    from instructune.models.logprobs import token_losses

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]), reverse=True)
    out: list[np.ndarray] = [np.zeros(0)] * len(sequences)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _batches(order, sequences, batch_size, max_batch_tokens):
                ids, labels, mask = right_pad([sequences[i] for i in batch], pad_id, device)
                # The training loss path itself (models.logprobs): same positions, fp32 chunks.
                batch_in = {"input_ids": ids, "attention_mask": mask, "labels": labels}
                nll = token_losses(model, batch_in, chunk_size)
                per_row = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()
                for i, lp in zip(batch, torch.split(-nll, per_row), strict=True):
                    out[i] = lp.double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _batches(
    order: list[int],
    sequences: Sequence[tuple[TokenSeq, TokenSeq]],
    batch_size: int,
    max_batch_tokens: int | None,
) -> list[list[int]]:
    """Consecutive groups of the length-sorted order, capped by rows and by padded tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = len(sequences[current[0]][0]) if current else len(sequences[i][0])
        too_many_tokens = max_batch_tokens is not None and longest * (len(current) + 1) > (
            max_batch_tokens
        )
        if current and (len(current) >= batch_size or too_many_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def right_pad(
    rows: list[tuple[TokenSeq, TokenSeq]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, attention_mask) [rows, longest], right-padded, on `device`."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        if len(row_ids) != len(row_labels):
            raise ValueError(
                f"input_ids and labels differ in length ({len(row_ids)} vs {len(row_labels)})"
            )
        n = len(row_ids)
        ids[r, :n] = torch.as_tensor(np.asarray(row_ids, dtype=np.int64))
        labels[r, :n] = torch.as_tensor(np.asarray(row_labels, dtype=np.int64))
        mask[r, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def evaluate_loss(
    model: Any,
    examples: Sequence[tuple[TokenSeq, TokenSeq]],
    sources: Sequence[str],
    task_name: str,
    pad_id: int,
    batch_size: int,
) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """One model on one loss task: outcome (loss, perplexity, n_tokens, n) and per-item records."""
    from instructune.evaluation.compare import TaskOutcome

    res = LossResult.from_logprobs(sequence_logprobs(model, examples, pad_id, batch_size))
    metrics: dict[str, Any] = {**res.metrics(), "n": len(examples)}
    records = [
        {"task": task_name, "type": "loss", "source": src, "loss": loss, "n_tokens": n}
        for src, loss, n in zip(sources, res.item_loss, res.item_tokens, strict=True)
    ]
    return TaskOutcome(task_name, "loss", metrics, {"loss": res.item_loss}, "loss"), records
