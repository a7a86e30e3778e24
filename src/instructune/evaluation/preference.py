"""`type: preference` eval tasks: does the model prefer the chosen answer over the rejected one?

A reward model (a `train.objective: reward` run) scores each answer with its reward head; any
other model by the answer's summed log-probability, as below.

Each held-out pair is tokenized exactly like DPO training tokenizes it (`data.preference`), and
the model scores both answers by their summed log-probability after the shared prompt (the
trained-positions path of `evaluation.loss.sequence_logprobs`). An item is correct when the
chosen answer scores higher; accuracy is compared with the base item by item (McNemar), the mean
margin (chosen minus rejected log-prob) by paired bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from instructune.data.preference import Pair


def evaluate_preference(
    model: Any, pairs: Sequence[Pair], task_name: str, pad_id: int, batch_size: int
) -> tuple[Any, list[dict[str, Any]]]:
    from instructune.evaluation.compare import TaskOutcome

    chosen, rejected = pair_scores(model, pairs, pad_id, batch_size)
    correct = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = max(len(pairs), 1)
    metrics = {"accuracy": sum(correct) / n, "margin": sum(margins) / n, "n": len(pairs)}
    records = [
        {
            "task": task_name,
            "type": "preference",
            "source": p.source,
            "chosen_score": c,
            "rejected_score": r,
            "correct": bool(ok),
        }
        for p, c, r, ok in zip(pairs, chosen, rejected, correct, strict=True)
    ]
    per_item = {"correct": correct, "margin": margins}
    return TaskOutcome(task_name, "preference", metrics, per_item, "accuracy"), records


def pair_scores(
    model: Any, pairs: Sequence[Pair], pad_id: int, batch_size: int
) -> tuple[list[float], list[float]]:
    """(chosen, rejected) scores: a reward model's rewards, else summed answer log-probs."""
    from instructune.models.rewards import is_reward_model

    if is_reward_model(model):
        return _rewards(model, pairs, pad_id, batch_size)
    from instructune.evaluation.loss import sequence_logprobs

    sequences = [(p.chosen_ids, p.chosen_labels) for p in pairs]
    sequences += [(p.rejected_ids, p.rejected_labels) for p in pairs]
    logps = [float(x.sum()) for x in sequence_logprobs(model, sequences, pad_id, batch_size)]
    return logps[: len(pairs)], logps[len(pairs) :]


def _rewards(
    model: Any, pairs: Sequence[Pair], pad_id: int, batch_size: int
) -> tuple[list[float], list[float]]:
    import torch

    from instructune.evaluation.loss import right_pad
    from instructune.models.rewards import sequence_rewards

    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, len(pairs), batch_size):
                chunk = pairs[lo : lo + batch_size]
                rows = [(p.chosen_ids, p.chosen_labels) for p in chunk]
                ids, labels, mask = right_pad(
                    rows + [(p.rejected_ids, p.rejected_labels) for p in chunk], pad_id, device
                )
                batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
                rewards = sequence_rewards(model, batch)
                good, bad = rewards.chunk(2)
                chosen += good.tolist()
                rejected += bad.tolist()
    finally:
        model.train(was_training)
    return chosen, rejected
