"""Token log-probs of a causal LM: decoder body → trained positions only → LM head in chunks.

Only positions whose next label is trained go through the vocabulary projection, in chunks with
fp32 log-softmax (`losses.py`), so the [N, vocab] logits never exist at once. Packed batches need
no special handling here: the collator's position_ids make transformers build a block-causal mask,
and every example's first label is -100, so no target crosses examples
(`tests/models/test_logprobs.py` proves the losses equal per-example forwards).

SFT training and eval loss, DPO's sequence log-probs, option scoring and preference evaluation
all assemble their token losses here (`trained_targets`, `token_losses`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from instructune.models.labels import IGNORE_INDEX
from instructune.models.losses import chunked_token_losses
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
    with adapter_autocast(model):
        hidden = model(**kwargs).hidden_states[-1]
    # prompt tuning puts its virtual tokens' states first; they predict nothing
    hidden = hidden[:, virtual_input_positions(model) :]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


@dataclass(frozen=True)
class TrainedTargets:
    """A batch's trained targets as the LM head sees them: what every token loss is made from."""

    hidden: torch.Tensor
    """Hidden states [N, H] of the positions whose next label is trained."""
    targets: torch.Tensor
    """Their labels [N]."""
    lm_head: nn.Module
    softcap: float | None
    """The model's logit softcap (`logit_softcap`)."""

    def losses(self, chunk_size: int, label_smoothing: float = 0.0) -> torch.Tensor:
        """Per-token cross-entropy [N] (fp32), the head applied in chunks (`losses.py`)."""
        return chunked_token_losses(
            self.lm_head, self.hidden, self.targets, chunk_size, label_smoothing, self.softcap
        )


def trained_targets(
    model: nn.Module, batch: Mapping[str, torch.Tensor], unwrapped: nn.Module | None = None
) -> TrainedTargets:
    """Run `model` on `batch` and collect what the loss of its trained targets needs.

    `model` is what runs the forward (DDP/PEFT/compiled wrappers run); `unwrapped` is the module
    the LM head and config are read from (default: `model` without a DDP `.module`).
    """
    inner = unwrapped if unwrapped is not None else getattr(model, "module", model)
    hidden, targets = trained_hidden(model, batch)
    _, head = causal_lm_parts(inner)
    return TrainedTargets(hidden, targets, head, logit_softcap(inner))


def token_losses(
    model: nn.Module, batch: Mapping[str, torch.Tensor], chunk_size: int = 256
) -> torch.Tensor:
    """Per-token cross-entropy [N] (fp32) of every trained target of `batch`, the model's own
    logit softcap included: the path SFT training, DPO log-probs and evaluation all share (the
    trainer's `kernels.summed_token_loss` sums the same `TrainedTargets.losses`)."""
    return trained_targets(model, batch).losses(chunk_size)


def sequence_logps(
    model: nn.Module, batch: Mapping[str, torch.Tensor], chunk_size: int = 1024
) -> torch.Tensor:
    """Sum of the log-probs of each row's trained targets [rows] (fp32), no full logits; rows are
    padded sequences (DPO's pairs), not packed ones."""
    return -per_example_losses(batch, token_losses(model, batch, chunk_size))[:, 0]


def logit_softcap(model: nn.Module) -> float | None:
    """The model's `final_logit_softcapping` (Gemma 2/3: logits = cap * tanh(logits / cap) before
    the softmax, in the model's own forward), None for models without one."""
    unwrap = getattr(model, "get_base_model", None)
    base: Any = unwrap() if callable(unwrap) else model
    config = getattr(base, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    return float(cap) if cap else None


@contextlib.contextmanager
def adapter_autocast(model: nn.Module) -> Iterator[None]:
    """Run float32 adapters in the frozen weights' half-precision dtype, keeping float32 masters.

    peft keeps adapter weights in float32 and casts each adapted layer's input up to float32: on
    a bf16 base that is a copy in, a float32 matmul and a float32 add per layer. Under autocast
    the adapter matmuls run in bf16 (the float32 weights are cast, their gradients flow back to
    float32), and peft's input cast is switched off (its documented `cast_input_dtype_enabled`
    switch) so activations stay bf16 end to end. A float32 or fully trainable model is left
    alone.
    """
    base_dtype, adapter_dtype = _weight_dtypes(model)
    if base_dtype not in (torch.bfloat16, torch.float16) or adapter_dtype != torch.float32:
        yield
        return
    # peft.helpers.disable_input_dtype_casting does this too, but fails on layers (IA3's) that
    # never set the attribute; a layer without it casts, as peft's `_cast_input_dtype` reads it.
    layers: list[Any] = [m for m in model.modules() if hasattr(m, "_cast_input_dtype")]
    saved = [getattr(m, "cast_input_dtype_enabled", True) for m in layers]
    device = next(model.parameters()).device.type
    try:
        for layer in layers:
            layer.cast_input_dtype_enabled = False
        with torch.autocast(device, dtype=base_dtype):
            yield
    finally:
        for layer, value in zip(layers, saved, strict=True):
            layer.cast_input_dtype_enabled = value


def _weight_dtypes(model: nn.Module) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(dtype of the frozen floating weights, dtype of the trainable ones), None when absent."""
    frozen = trained = None
    for p in model.parameters():
        if not p.is_floating_point():
            continue
        if p.requires_grad and trained is None:
            trained = p.dtype
        elif not p.requires_grad and frozen is None:
            frozen = p.dtype
        if frozen is not None and trained is not None:
            break
    return frozen, trained


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
