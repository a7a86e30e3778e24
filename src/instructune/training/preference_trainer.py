"""Trainers for preference pairs: `DPOTrainer` (training/dpo.py) and `RewardTrainer` (reward
head: models/rewards.py), both `InstructTrainer` with another loss over pair batches.

The loss of an optimizer step is the sum of its pairs' losses divided by the number of pairs in
the whole step (all micro-batches, all processes), like the SFT loss is normalized by trained
targets. Rewards, margins and preference accuracy are averaged over the pairs of each logging
window and logged with the loss, so they reach metrics.jsonl; under DDP the windows' sums and
pair counts are summed over the processes first, so the logged means are over every pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from instructune.config.schema import DPOConfig
from instructune.models.logprobs import sequence_logps
from instructune.models.rewards import sequence_rewards
from instructune.training.dpo import dpo_losses, reference_logps
from instructune.training.trainer import InstructTrainer

PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
DPO_METRICS = (*PAIR_METRICS, "logps/chosen", "logps/rejected")


def window_means(
    sums: dict[str, float],
    pairs: int,
    keys: Sequence[str],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Each key's sum over the window's pairs divided by their number; `reduce` sums a tensor
    over the processes (every process calls it, with the same keys, even with no pairs)."""
    totals = torch.tensor([sums.get(k, 0.0) for k in keys] + [float(pairs)], dtype=torch.float64)
    if reduce is not None:
        totals = reduce(totals)
    count = float(totals[-1])
    return (
        {k: float(v) / count for k, v in zip(keys, totals[:-1].tolist(), strict=True)}
        if count
        else {}
    )


class PairTrainer(InstructTrainer):
    """Pair batches (chosen rows, then rejected rows); subclasses give `pair_losses`."""

    metric_keys: tuple[str, ...] = PAIR_METRICS
    """What `_sums` collects: the same keys on every process, for the cross-process sum."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sums: dict[str, float] = defaultdict(float)
        self._pairs = 0

    def pair_losses(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-pair losses [B], chosen rewards [B], rejected rewards [B])."""
        raise NotImplementedError

    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, device: torch.device
    ) -> tuple[list[Any], torch.Tensor | None]:
        """Token counts as for SFT; the divisor handed to compute_loss is the step's pairs."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:
            return batches, None
        pairs = torch.tensor(sum(b["input_ids"].shape[0] // 2 for b in batches), device=device)
        if self.args.world_size > 1:
            pairs = self.accelerator.reduce(pairs, reduction="sum")
        return batches, pairs

    def summed_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """(summed loss of the batch's pairs, how many pairs): the step divides by its pairs."""
        losses, chosen, rejected = self.pair_losses(model, inputs)
        if model.training:
            self._record(chosen.detach(), rejected.detach())
        return losses.sum(), losses.numel()

    def _record(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        sums = self._sums
        sums["rewards/chosen"] += float(chosen.sum())
        sums["rewards/rejected"] += float(rejected.sum())
        sums["rewards/margins"] += float((chosen - rejected).sum())
        sums["rewards/accuracies"] += float((chosen > rejected).float().sum())
        self._pairs += int(chosen.numel())

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # every process logs the training loss at the same steps: the collective sum is safe
        if "loss" in logs:
            logs = logs | window_means(self._sums, self._pairs, self.metric_keys, self._reduce())
            self._sums.clear()
            self._pairs = 0
        super().log(logs, *args, **kwargs)

    def _reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self.args.world_size <= 1:
            return None
        device = self.args.device

        def reduce(totals: torch.Tensor) -> torch.Tensor:
            # gloo and nccl sum float64 on the processes' device; back to CPU for the division
            summed = self.accelerator.reduce(totals.to(device), reduction="sum")
            return summed.cpu()

        return reduce


class DPOTrainer(PairTrainer):
    metric_keys = DPO_METRICS

    def __init__(
        self, *args: Any, dpo: DPOConfig, ref_model: nn.Module | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.dpo = dpo
        self.ref_model = ref_model.to(self.args.device) if ref_model is not None else None

    def pair_losses(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunk = self.loss_chunk_size
        reference = reference_logps(model, self.ref_model, inputs, chunk)
        policy = sequence_logps(model, inputs, chunk)
        out = dpo_losses(policy, reference, inputs["labels"], self.dpo)
        if model.training:
            chosen, rejected = policy.detach().chunk(2)
            self._sums["logps/chosen"] += float(chosen.sum())
            self._sums["logps/rejected"] += float(rejected.sum())
        return out.losses, out.chosen_rewards, out.rejected_rewards


class RewardTrainer(PairTrainer):
    """Bradley-Terry loss on the reward head's scores of chosen and rejected answers."""

    def pair_losses(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rewards = sequence_rewards(model, inputs)
        chosen, rejected = rewards.chunk(2)
        return bradley_terry_losses(rewards), chosen, rejected


def bradley_terry_losses(rewards: torch.Tensor) -> torch.Tensor:
    """Per-pair losses [B] from [2B] rewards (chosen half first): -log sigmoid(r_chosen -
    r_rejected), as TRL's RewardTrainer."""
    chosen, rejected = rewards.chunk(2)
    return -F.logsigmoid(chosen - rejected)
