"""`InstructTrainer`: `transformers.Trainer` with our loss; everything else is the stock Trainer.

The loss is the sum of per-token cross-entropies over the trained targets of a micro-batch (only
those positions go through the LM head, in chunks) divided by the number of trained targets of
the whole optimizer step: all its micro-batches, all processes. So the gradient of a step is
exactly that of one big batch, however the tokens fall into micro-batches.

transformers 5.23 already counts `labels[..., 1:] != -100` for causal LMs in its own
`_get_num_items_in_batch`, but only when the model "accepts loss kwargs" (a check on the forward
signature that PEFT and some models fail) and only to hand the count to the model's loss. We count
in `get_batch_samples` ourselves, the public hook that returns the count, so the divisor does not
depend on that signature check.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from instructune.models.labels import IGNORE_INDEX
from instructune.models.logprobs import trained_targets
from instructune.rundir import COUNTS_FILE, RUN_INFO_FILE
from instructune.training.checkpoints import AtomicCheckpoints
from instructune.training.kernels import KernelPlan, summed_token_loss


@dataclass
class TokenCounter:
    """Tokens fed and targets trained so far (all processes); read by the metrics callbacks."""

    tokens: int = 0
    trained_tokens: int = 0


class InstructTrainer(AtomicCheckpoints, Trainer):
    # compute_loss returns a loss already normalized over the whole accumulated step.
    loss_is_scaled_for_ga = True
    run_info: dict[str, Any] | None = None
    """Written into each checkpoint (resolved config, data hashes) to check resumes against."""
    kernels: KernelPlan | None = None
    """`train.kernels` as resolved (training/kernels.py); None: our chunked loss."""

    def __init__(
        self,
        *args: Any,
        loss_chunk_size: int = 1024,
        label_smoothing: float = 0.0,
        pad_token_id: int = 0,
        counter: TokenCounter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_chunk_size = loss_chunk_size
        self.label_smoothing = label_smoothing
        self.pad_token_id = pad_token_id
        self.counter = counter if counter is not None else TokenCounter()

    def checkpoint_json(self) -> dict[str, Any]:
        """Token counts (a resumed run continues them exactly) and the run info, per checkpoint."""
        counts = {"tokens": self.counter.tokens, "trained_tokens": self.counter.trained_tokens}
        files: dict[str, Any] = {COUNTS_FILE: counts}
        if self.run_info is not None:
            files[RUN_INFO_FILE] = self.run_info
        return files

    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, device: torch.device
    ) -> tuple[list[Any], torch.Tensor | None]:
        """The step's micro-batches and its trained-target count summed over processes."""
        batches = list(itertools.islice(epoch_iterator, num_batches))
        if not batches:
            return batches, None
        counts = torch.tensor(
            [
                sum(count_targets(b["labels"]) for b in batches),
                sum(count_tokens(b, self.pad_token_id) for b in batches),
            ],
            device=device,
        )
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self.counter.trained_tokens += int(counts[0])
        self.counter.tokens += int(counts[1])
        return batches, counts[0]

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The batch's summed loss over the step's item count (training), else over its own."""
        total, items = self.summed_loss(model, inputs)
        if model.training and num_items_in_batch is not None:
            loss = total / torch.as_tensor(num_items_in_batch).clamp(min=1)
            # DDP averages gradients over processes; the divisor is already the global count.
            loss = loss * self.accelerator.num_processes
        else:
            loss = total / max(items, 1)
        return (loss, {}) if return_outputs else loss

    def summed_loss(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """(summed loss of the batch, how many items it sums: here trained targets)."""
        trained = trained_targets(model, inputs, self.accelerator.unwrap_model(model))
        gather_sharded_head(model, trained.lm_head)
        # Label smoothing is a training regularizer; eval reports the plain cross-entropy.
        smoothing = self.label_smoothing if model.training else 0.0
        total = summed_token_loss(self.kernels, trained, self.loss_chunk_size, smoothing)
        if trained.targets.numel() == 0:
            # Keep the graph attached to every parameter: DDP waits for each one's gradient.
            total = total + trained.hidden.sum() * 0.0
        return total, trained.targets.numel()


def gather_sharded_head(model: nn.Module, lm_head: nn.Module) -> None:
    """Gather the LM head's weights again when FSDP2 has resharded them.

    Our loss applies the head after the wrapped forward returns, to the trained positions only.
    Under FSDP2 (`fully_shard`, accelerate's `fsdp_version: 2`) the unit holding the head (the
    root, usually) reshards when its forward returns, leaving a sharded DTensor that the loss can't
    multiply by. `unshard()` on the innermost FSDP unit holding the head all-gathers it again; the
    unit's post-backward hook reshards it and reduce-scatters the head's gradient as usual
    (`tests/training/test_fsdp.py` checks the gradients against one process on CPU, gloo).
    """
    from torch.distributed.tensor import DTensor

    if not isinstance(getattr(lm_head, "weight", None), DTensor):
        return
    from torch.distributed.fsdp import FSDPModule

    path = next(name for name, m in model.named_modules() if m is lm_head)
    owners = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, FSDPModule) and (name in ("", path) or path.startswith(name + "."))
    ]
    if owners:  # a DTensor from elsewhere (tensor parallelism) is left to fail in the matmul
        max(owners, key=lambda owner: len(owner[0]))[1].unshard()


def count_targets(labels: torch.Tensor) -> int:
    """Trained targets after the causal shift: position j predicts labels[j + 1]."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def count_tokens(batch: Mapping[str, torch.Tensor], pad_token_id: int) -> int:
    """Real (non-padding) tokens of a batch.

    Padded batches carry an attention_mask. Packed batches don't: their padding tail is the last
    segment (position_ids restart at 0) when every token of it is the pad token.
    """
    mask = batch.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    ids, positions = batch["input_ids"], batch["position_ids"]
    total = ids.numel()
    for row_ids, row_pos in zip(ids, positions, strict=True):
        last = int(torch.nonzero(row_pos == 0)[-1])
        if bool((row_ids[last:] == pad_token_id).all()):
            total -= row_ids.numel() - last
    return total
