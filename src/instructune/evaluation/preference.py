"""`type: preference` eval tasks: does the model prefer the chosen answer over the rejected one?

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
    from instructune.evaluation.loss import sequence_logprobs

    sequences = [(p.chosen_ids, p.chosen_labels) for p in pairs]
    sequences += [(p.rejected_ids, p.rejected_labels) for p in pairs]
    logps = [float(x.sum()) for x in sequence_logprobs(model, sequences, pad_id, batch_size)]
    chosen, rejected = logps[: len(pairs)], logps[len(pairs) :]
    correct = [float(c > r) for c, r in zip(chosen, rejected, strict=True)]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = max(len(pairs), 1)
    metrics = {"accuracy": sum(correct) / n, "margin": sum(margins) / n, "n": len(pairs)}
    records = [
        {
            "task": task_name,
            "type": "preference",
            "source": p.source,
            "chosen_logp": c,
            "rejected_logp": r,
            "correct": bool(ok),
        }
        for p, c, r, ok in zip(pairs, chosen, rejected, correct, strict=True)
    ]
    per_item = {"correct": correct, "margin": margins}
    return TaskOutcome(task_name, "preference", metrics, per_item, "accuracy"), records
