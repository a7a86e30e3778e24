"""Token losses from an LM head: trained hidden states [N, H] and their targets [N] → per-token
cross-entropy [N] (fp32), the head applied in chunks so the [N, vocab] logits never exist at once.

Training (SFT's native kernel path, DPO's log-probs) and evaluation (loss, option scoring,
preference pairs) all get their token losses here, through `logprobs.token_losses`; a plain linear
head goes through the fused `LinearCrossEntropy`, anything else through autograd with per-chunk
recomputation. The model's logit softcap (Gemma 2/3) and label smoothing are applied in both.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


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
    gather backward); anything else (a head wrapped by an adapter, or one ZeRO-3 partitions)
    through autograd, chunk by chunk with recomputation.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if is_zero3_partitioned(lm_head):
        lm_head = _ModuleCall(lm_head)
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


def is_zero3_partitioned(module: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 manages this module's weight (its parameters carry `ds_id`).

    ZeRO-3 gathers a module's weights in hooks around the module's own call and partitions them
    again afterwards. The fused loss reads `weight` directly, outside any call, where it is an
    empty partition; such a head goes through the chunked path that calls the module instead.
    """
    return hasattr(getattr(module, "weight", None), "ds_id")


class _ModuleCall(nn.Module):
    """Calls the wrapped head as a module (so ZeRO-3's hooks gather it), never reading its weight;
    not a plain `nn.Linear`, so `chunked_token_losses` takes its per-chunk autograd path."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(hidden)
        return out
