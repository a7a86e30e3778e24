"""DPO: pairs dataset and collator, sequence log-probs on the trained-positions path, the loss.

A batch holds the chosen answers of its pairs in its first half and the rejected ones in the
second, right-padded together. Sequence log-probs are sums over each row's trained targets (the
answer and its end-of-turn token) through `models.logprobs.sequence_logps`: only those positions
reach the LM head, in chunks, so the [rows, length, vocab] logits never exist.

The reference model is the policy with its adapter disabled (LoRA, QLoRA, IA3: no second copy of
the weights), or a frozen copy of the base for `method: full`. `dpo.precompute_ref` computes the
reference log-probs of every pair once, before training.

The loss matches TRL's `DPOTrainer` (trl 1.16) on the same batch: `sigmoid`, `ipo` (normalized
by answer lengths) and `robust`; `sigmoid` with label smoothing is cDPO.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from instructune.config.schema import DPOConfig
from instructune.data.collate import pad_rows
from instructune.data.preference import Pair
from instructune.models.labels import IGNORE_INDEX
from instructune.models.logprobs import sequence_logps

REF_KEY = "ref_logps"
"""Batch key of precomputed reference log-probs [2B] (chosen half, then rejected half)."""


class PairDataset(Dataset[Pair]):
    packed = False

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)
        self.ref: np.ndarray | None = None
        """[n, 2] precomputed reference log-probs (chosen, rejected), when computed."""

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Any:
        pair = self.pairs[index]
        if self.ref is None:
            return pair
        return (pair, self.ref[index])

    def collator(self, pad_token_id: int) -> PairCollator:
        return PairCollator(pad_token_id)

    def trained_tokens(self) -> int:
        return int(
            sum(
                np.count_nonzero(p.chosen_labels[1:] != IGNORE_INDEX)
                + np.count_nonzero(p.rejected_labels[1:] != IGNORE_INDEX)
                for p in self.pairs
            )
        )

    def tokens(self) -> int:
        return int(sum(len(p.chosen_ids) + len(p.rejected_ids) for p in self.pairs))


@dataclass
class PairCollator:
    """Pairs → {input_ids, labels, attention_mask} [2B, L]: chosen rows, then rejected rows."""

    pad_token_id: int

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        pairs = [i[0] if isinstance(i, tuple) else i for i in items]
        ids = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        labels = [p.chosen_labels for p in pairs] + [p.rejected_labels for p in pairs]
        width = max(len(r) for r in ids)
        batch = {
            "input_ids": pad_rows(ids, self.pad_token_id, width),
            "labels": pad_rows(labels, IGNORE_INDEX, width),
            "attention_mask": pad_rows([np.ones(len(r), np.int64) for r in ids], 0, width),
        }
        if items and isinstance(items[0], tuple):
            ref = np.stack([i[1] for i in items])  # [B, 2]
            batch[REF_KEY] = torch.from_numpy(np.concatenate([ref[:, 0], ref[:, 1]]))
        return batch


@contextlib.contextmanager
def reference_mode(model: nn.Module, ref_model: nn.Module | None) -> Iterator[nn.Module]:
    """The reference to score with: `ref_model`, else `model` with its adapters disabled."""
    if ref_model is not None:
        yield ref_model
        return
    inner: Any = getattr(model, "module", model)
    if not hasattr(inner, "disable_adapter"):
        raise ValueError(
            "DPO needs a reference: an adapter method (lora, qlora, ia3) whose adapter can be "
            "disabled, or a reference model for method: full"
        )
    with inner.disable_adapter():
        yield model


def reference_logps(
    model: nn.Module, ref_model: nn.Module | None, batch: Mapping[str, torch.Tensor], chunk: int
) -> torch.Tensor:
    if REF_KEY in batch:
        return batch[REF_KEY].to(torch.float32)
    was_training = model.training
    model.eval()  # no dropout in the reference, as TRL
    try:
        with torch.no_grad(), reference_mode(model, ref_model) as ref:
            return sequence_logps(ref, batch, chunk)
    finally:
        model.train(was_training)


def precompute_reference(
    model: nn.Module,
    ref_model: nn.Module | None,
    dataset: PairDataset,
    pad_token_id: int,
    batch_size: int,
    chunk_size: int = 1024,
) -> None:
    """Store the reference log-probs of every pair on `dataset` (one no-grad pass)."""
    collate = PairCollator(pad_token_id)
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(dataset.pairs), batch_size):
        batch = collate(dataset.pairs[lo : lo + batch_size])
        ref = reference_logps(
            model, ref_model, {k: v.to(device) for k, v in batch.items()}, chunk_size
        )
        chosen, rejected = ref.chunk(2)
        out.append(torch.stack([chosen, rejected], dim=1).cpu().numpy())
    dataset.ref = np.concatenate(out) if out else np.zeros((0, 2), np.float32)


@dataclass
class DPOOutput:
    losses: torch.Tensor
    """Per pair [B]."""
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_losses(
    policy: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, cfg: DPOConfig
) -> DPOOutput:
    """Per-pair DPO losses from [2B] policy and reference sequence log-probs (chosen first)."""
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = reference.to(policy.dtype).chunk(2)
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    beta, eps = cfg.beta, cfg.label_smoothing
    if cfg.loss == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif cfg.loss == "robust":
        clean = -(1 - eps) * F.logsigmoid(beta * delta)
        flipped = -eps * F.logsigmoid(-beta * delta)
        losses = (clean - flipped) / (1 - 2 * eps)
    else:
        lengths = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1).clamp(min=1).to(policy.dtype)
        n_chosen, n_rejected = lengths.chunk(2)
        ipo = chosen_ratio / n_chosen - rejected_ratio / n_rejected
        losses = (ipo - 1 / (2 * beta)) ** 2
    return DPOOutput(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


__all__ = [
    "REF_KEY",
    "DPOOutput",
    "PairCollator",
    "PairDataset",
    "dpo_losses",
    "precompute_reference",
    "reference_logps",
    "reference_mode",
]
