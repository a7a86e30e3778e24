"""The training loss path: decoder body → trained positions only → LM head in chunks.

Only positions whose next label is trained go through the vocabulary projection, in chunks with
fp32 log-softmax, each chunk recomputed in backward (activation checkpointing), so the [N, vocab]
logits never exist at once. Packed batches need no special handling here: the collator's
position_ids make transformers build a block-causal mask, and every example's first label is -100,
so no target crosses examples (`tests/training/test_forward.py` proves the losses equal per-example
forwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
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
    with adapter_autocast(model):
        hidden = model(**kwargs).hidden_states[-1]
    # prompt tuning puts its virtual tokens' states first; they predict nothing
    hidden = hidden[:, virtual_input_positions(model) :]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


def token_losses(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    chunk_size: int = 256,
    label_smoothing: float = 0.0,
    unwrapped: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token cross-entropy [N] fp32, the hidden states it came from [N, H]) of every trained
    target of `batch`: the one place token losses and log-probs are assembled (SFT training and
    eval, DPO log-probs, evaluation's scoring), the model's own logit softcap included.

    `model` is what runs the forward (DDP/PEFT/compiled wrappers run); `unwrapped` is the module
    the LM head and config are read from (default: `model` without a DDP `.module`).
    """
    inner = unwrapped if unwrapped is not None else getattr(model, "module", model)
    hidden, targets = trained_hidden(model, batch)
    _, head = causal_lm_parts(inner)
    losses = chunked_token_losses(
        head, hidden, targets, chunk_size, label_smoothing, logit_softcap(inner)
    )
    return losses, hidden


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


def chunked_token_losses(
    lm_head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 256,
    label_smoothing: float = 0.0,
    logit_softcap: float | None = None,
) -> torch.Tensor:
    """Per-token cross-entropy [N] (fp32), the LM head applied `chunk_size` positions at a time.

    Label smoothing matches `F.cross_entropy(label_smoothing=eps)`: (1 - eps) * nll + eps * mean
    over the vocabulary of -log p. `logit_softcap` is for models that cap logits (Gemma 2/3).

    A plain linear head goes through `LinearCrossEntropy` (fused: no [N, vocab] log-probs, no
    gather backward); anything else (a head wrapped by an adapter) through autograd, chunk by
    chunk with recomputation.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if type(lm_head) is nn.Linear and lm_head.bias is None:
        hidden = hidden.to(lm_head.weight.dtype)
        settings = (chunk_size, label_smoothing, logit_softcap)
        out: torch.Tensor = LinearCrossEntropy.apply(hidden, lm_head.weight, targets, settings)
        return out
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


Settings = tuple[int, float, float | None]


class LinearCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of `hidden @ weight.T`, chunk by chunk, never keeping logits.

    Each chunk's logits are made once in the compute dtype, turned to fp32 probabilities in place
    and, in the same pass, into d(loss)/d(logits) = softmax - target distribution. When the head
    is frozen (every adapter method), d(loss)/d(hidden) is finished in the forward (one more
    matmul) and backward only scales it by each token's upstream gradient: two vocabulary matmuls
    a chunk instead of autograd's three, and no [chunk, vocab] log-softmax, gather-scatter or
    dtype copies kept for backward. A trainable head (full fine-tuning) recomputes the chunk in
    backward, where the upstream gradient is known, for its weight gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        settings: Settings,
    ) -> torch.Tensor:
        chunk_size, _, _ = settings
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        early = need_hidden and not need_weight
        grad_hidden = torch.empty_like(hidden) if early else None
        losses = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        buffers = _chunk_buffers(hidden, weight, chunk_size)
        for lo in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[lo : lo + chunk_size], targets[lo : lo + chunk_size]
            losses[lo : lo + len(h)], grad_logits = _chunk_grad(
                h, weight, t, settings, early, buffers
            )
            if grad_hidden is not None and grad_logits is not None:
                torch.mm(grad_logits, weight, out=grad_hidden[lo : lo + len(h)])
        ctx.settings = settings
        if grad_hidden is not None:
            ctx.save_for_backward(grad_hidden)
        else:
            ctx.save_for_backward(hidden, weight, targets)
        ctx.early = early
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        if ctx.early:
            (grad_hidden,) = ctx.saved_tensors
            return grad_hidden * grad_losses.unsqueeze(1).to(grad_hidden.dtype), None, None, None
        hidden, weight, targets = ctx.saved_tensors
        chunk_size = ctx.settings[0]
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        buffers = _chunk_buffers(hidden, weight, chunk_size)
        for lo in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[lo : lo + chunk_size], targets[lo : lo + chunk_size]
            _, grad_logits = _chunk_grad(h, weight, t, ctx.settings, True, buffers)
            if grad_logits is None:  # never: asked for with want_grad=True
                continue
            grad_logits.mul_(grad_losses[lo : lo + len(h)].unsqueeze(1).to(grad_logits.dtype))
            if grad_h is not None:
                torch.mm(grad_logits, weight, out=grad_h[lo : lo + len(h)])
            if grad_w is not None:
                grad_w.add_(grad_logits.t().mm(h).float())
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None


def _chunk_buffers(
    hidden: torch.Tensor, weight: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One [chunk, vocab] buffer in the compute dtype and one in fp32, reused by every chunk.

    Why: a fresh [256, 49152] fp32 tensor is 50 MB, above glibc's largest mmap threshold (32 MB),
    so each chunk's allocation was a new mmap whose pages faulted in on first touch; on CPU the
    two dtype copies that touched them took 2/3 of the LM head's time. The fp32 buffer serves as
    the logits, the probabilities and d(loss)/d(logits); the other one holds the matmul's output
    and the gradient in the compute dtype. (Working in place in bf16 instead, with no fp32 buffer,
    measured no faster: each bf16 op converts to fp32 and back.)
    """
    rows, vocab = min(chunk_size, hidden.shape[0]), weight.shape[0]
    wide = hidden.new_empty(rows, vocab, dtype=torch.float32)
    low = wide if hidden.dtype == torch.float32 else hidden.new_empty(rows, vocab)
    return low, wide


def _chunk_grad(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    settings: Settings,
    want_grad: bool,
    buffers: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(losses [n] fp32, d(loss)/d(logits) [n, vocab] in the compute dtype, or None).

    The gradient is a view of `buffers`, valid until the next chunk overwrites it.
    """
    _, smoothing, softcap = settings
    low, wide = buffers[0][: len(hidden)], buffers[1][: len(hidden)]
    logits = torch.mm(hidden, weight.t(), out=low)
    if low is not wide:
        logits = wide.copy_(logits)
    slope = None  # d(capped)/d(raw) = 1 - tanh^2
    if softcap is not None:
        logits.div_(softcap).tanh_()
        slope = logits.square().neg_().add_(1.0) if want_grad else None
        logits.mul_(softcap)
    rows = torch.arange(len(targets), device=targets.device)
    target_logit = logits[rows, targets]
    mean_logit = logits.mean(dim=1) if smoothing else None
    peak = logits.amax(dim=1, keepdim=True)
    probs = logits.sub_(peak).exp_()  # in place: the chunk's only [n, vocab] fp32 buffer
    total = probs.sum(dim=1, keepdim=True)
    lse = (peak + total.log()).squeeze(1)
    losses = lse - target_logit
    if mean_logit is not None:
        losses = (1.0 - smoothing) * losses + smoothing * (lse - mean_logit)
    if not want_grad:
        return losses, None
    probs.div_(total)  # softmax
    probs[rows, targets] -= 1.0 - smoothing
    if smoothing:
        probs.sub_(smoothing / probs.shape[1])
    if slope is not None:
        probs.mul_(slope)
    return losses, probs if low is wide else low.copy_(probs)


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
