"""Reward models: a one-output head on the base scores each answer at its end-of-turn token.

The score is read at the last trained position of each row (the answer's end-of-turn token: the
labels mark it), not at the last non-padding token transformers' sequence-classification pooling
looks for, which depends on the pad token and on what the template renders after the turn. Reward
training (`training.preference_trainer`), GRPO and preference evaluation all score this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from instructune.models.labels import IGNORE_INDEX


def score_head(model: nn.Module) -> nn.Module:
    """The reward head (`score`) of a *ForSequenceClassification, through PEFT/DDP wrappers."""
    inner: Any = getattr(model, "module", model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    head = getattr(base, "score", None)
    if head is None:
        raise TypeError(
            f"{type(base).__name__} has no `score` head: not a reward model (train one with "
            "train.objective: reward)"
        )
    return head


def is_reward_model(model: nn.Module) -> bool:
    inner: Any = getattr(model, "module", model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return type(base).__name__.endswith("ForSequenceClassification")


def sequence_rewards(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One reward per row [rows] (fp32): the head applied at the row's last trained position."""
    labels = batch["labels"]
    kwargs: dict[str, Any] = {"input_ids": batch["input_ids"], "output_hidden_states": True}
    if batch.get("attention_mask") is not None:
        kwargs["attention_mask"] = batch["attention_mask"]
    hidden = model(**kwargs).hidden_states[-1]
    positions = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    last = torch.where(labels != IGNORE_INDEX, positions, -1).max(dim=1).values
    if bool((last < 0).any()):
        raise ValueError("a row has no trained token: nothing marks where its answer ends")
    rows = torch.arange(labels.shape[0], device=labels.device)
    return score_head(model)(hidden[rows, last]).squeeze(-1).float()
