"""The training loss path: decoder body → trained positions only → LM head in chunks.

Only positions whose next label is trained go through the vocabulary projection, in chunks with
fp32 log-softmax, each chunk recomputed in backward (activation checkpointing), so the [N, vocab]
logits never exist at once. Packed batches need no special handling here: the collator's
position_ids make transformers build a block-causal mask, and every example's first label is -100,
so no target crosses examples (`tests/training/test_forward.py` proves the losses equal per-example
forwards).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from instructune.data.examples import IGNORE_INDEX
from instructune.models.peft_methods import virtual_input_positions


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder body, LM head) of a *ForCausalLM, unwrapping a PEFT model first.

    `get_decoder()` (transformers 5.x) finds the body whatever its attribute name (`model`,
    `transformer`, `language_model`); LoRA layers are injected in place, so calling the body
    directly still runs them.
    """
    unwrap = getattr(model, "get_base_model", None)
    base: Any = unwrap() if callable(unwrap) else model
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or decoder is base or head is None:
        raise TypeError(
            f"{type(base).__name__} is not a causal LM with a decoder body and an LM head "
            "(expected a transformers *ForCausalLM, optionally wrapped by PEFT)"
        )
    return decoder, head


def trained_hidden(
    model: nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [N, H] of the positions whose next label is trained, and those labels [N].

    Labels are aligned with input_ids (unshifted): position j predicts labels[j + 1].

    The model's own forward runs (plain, PEFT-wrapped or DDP-wrapped alike: DDP arms its gradient
    all-reduce in its forward, so calling the inner decoder would silently leave every process
    with its own gradients). The LM head is skipped with an empty `logits_to_keep`, and
    transformers 5.x returns the final normed hidden state as `hidden_states[-1]`.
    attention_mask is passed only when the batch has one (padded batches); packed batches rely on
    position_ids, and `use_cache=False` keeps transformers on the packed (block-causal) mask path.
    """
    labels = batch["labels"]
    kwargs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "use_cache": False,
        "output_hidden_states": True,
        "logits_to_keep": torch.zeros(0, dtype=torch.long, device=labels.device),
    }
    for key in ("position_ids", "attention_mask"):
        if batch.get(key) is not None:
            kwargs[key] = batch[key]
    hidden = model(**kwargs).hidden_states[-1]
    # prompt tuning puts its virtual tokens' states first; they predict nothing
    hidden = hidden[:, virtual_input_positions(model) :]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


def chunked_token_losses(
    lm_head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    label_smoothing: float = 0.0,
    logit_softcap: float | None = None,
) -> torch.Tensor:
    """Per-token cross-entropy [N] (fp32), the LM head applied `chunk_size` positions at a time.

    Label smoothing matches `F.cross_entropy(label_smoothing=eps)`: (1 - eps) * nll + eps * mean
    over the vocabulary of -log p. `logit_softcap` is for models that cap logits (Gemma 2/3).
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    losses = []
    for lo in range(0, hidden.shape[0], chunk_size):
        args = (hidden[lo : lo + chunk_size], targets[lo : lo + chunk_size])
        if recompute:  # keep only the chunk's input; its logits are rebuilt in backward
            out = checkpoint(
                _chunk_loss, lm_head, *args, label_smoothing, logit_softcap, use_reentrant=False
            )
        else:
            out = _chunk_loss(lm_head, *args, label_smoothing, logit_softcap)
        losses.append(out)
    return torch.cat(losses)


def _chunk_loss(
    lm_head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float,
    logit_softcap: float | None,
) -> torch.Tensor:
    logits = lm_head(hidden).float()
    if logit_softcap is not None:
        logits = torch.tanh(logits / logit_softcap) * logit_softcap
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    if label_smoothing == 0.0:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(dim=-1)


def per_example_losses(
    batch: Mapping[str, torch.Tensor], token_losses: torch.Tensor
) -> torch.Tensor:
    """Sum of token losses per (row, segment) [B, S], segments read from position_ids.

    Token losses are in `trained_hidden` order (row-major over trained targets). A segment starts
    wherever position_ids do not continue by +1, the rule transformers uses for the packed mask;
    a batch without position_ids has one segment per row. The padding tail is a segment too
    (with zero loss), so segment k of row b is the k-th packed example of that row.
    """
    labels = batch["labels"]
    positions = batch.get("position_ids")
    if positions is None:
        segments = torch.zeros_like(labels)
    else:
        step = torch.diff(positions, dim=-1, prepend=positions[:, :1] - 1)
        segments = (step != 1).cumsum(-1)
    # the loss at position j is for target labels[:, j + 1], which belongs to that token's segment
    target_segments = segments[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
    target_rows = rows[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    width = int(segments.max().item()) + 1 if segments.numel() else 1
    out = token_losses.new_zeros(labels.shape[0] * width)
    out.index_add_(0, target_rows * width + target_segments, token_losses)
    return out.view(labels.shape[0], width)
