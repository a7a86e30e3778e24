"""The chunked LM-head loss: per-token cross-entropy (label smoothing, logit softcap) and its
gradients equal F.cross_entropy over the full logits, on the fused and the generic path."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from instructune.models.logprobs import causal_lm_parts
from instructune.models.losses import chunked_token_losses, is_zero3_partitioned


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_losses_match_full_cross_entropy(smoothing: float) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16)
    targets = torch.randint(0, 50, (37,))
    got = chunked_token_losses(head, hidden, targets, chunk_size=8, label_smoothing=smoothing)
    want = F.cross_entropy(head(hidden), targets, label_smoothing=smoothing, reduction="none")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    mean = F.cross_entropy(head(hidden), targets, label_smoothing=smoothing)
    torch.testing.assert_close(got.mean(), mean, atol=1e-6, rtol=1e-6)


def test_chunked_losses_gradients_match_full(tiny_tok: Any) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    chunked_token_losses(head, hidden, targets, chunk_size=5, label_smoothing=0.1).mean().backward()
    got_h, got_w = hidden.grad.clone(), head.weight.grad.clone()  # type: ignore[union-attr]
    hidden.grad, head.weight.grad = None, None
    F.cross_entropy(head(hidden), targets, label_smoothing=0.1).backward()
    torch.testing.assert_close(got_h, hidden.grad)
    torch.testing.assert_close(got_w, head.weight.grad)


@pytest.mark.parametrize("trainable_head", [False, True])
@pytest.mark.parametrize(("smoothing", "softcap"), [(0.0, None), (0.1, None), (0.0, 5.0)])
def test_fused_loss_matches_autograd_with_per_token_gradients(
    trainable_head: bool, smoothing: float, softcap: float | None
) -> None:
    """LinearCrossEntropy (plain linear head) against F.cross_entropy, with a different upstream
    gradient per token (DPO weights its tokens per sequence), frozen and trainable head."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(trainable_head)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    weights = torch.rand(37)
    got = chunked_token_losses(head, hidden, targets, 8, smoothing, softcap)
    (got * weights).sum().backward()
    got_h = hidden.grad.clone()  # type: ignore[union-attr]
    got_w = head.weight.grad.clone() if trainable_head else None  # type: ignore[union-attr]
    hidden.grad, head.weight.grad = None, None
    logits = head(hidden)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    want = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="none")
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_h, hidden.grad, atol=1e-5, rtol=1e-5)
    if got_w is not None:
        torch.testing.assert_close(got_w, head.weight.grad, atol=1e-5, rtol=1e-5)


def test_fused_loss_in_bf16_matches_fp32_reference() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 300, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(70, 32, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 300, (70,))
    got = chunked_token_losses(head, hidden, targets, chunk_size=16)
    got.mean().backward()
    ref_hidden = hidden.detach().float().requires_grad_()
    want = F.cross_entropy(ref_hidden @ head.weight.float().t(), targets, reduction="none")
    want.mean().backward()
    assert got.dtype == torch.float32 and hidden.grad is not None
    torch.testing.assert_close(got, want, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(hidden.grad.float(), ref_hidden.grad, atol=2e-3, rtol=5e-2)


def test_head_with_bias_takes_the_generic_path() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(9, 16)
    targets = torch.randint(0, 50, (9,))
    got = chunked_token_losses(head, hidden, targets, chunk_size=4)
    want = F.cross_entropy(head(hidden), targets, reduction="none")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_a_zero3_partitioned_head_is_called_as_a_module(tiny_model: Any) -> None:
    """Under DeepSpeed ZeRO-3 the head's weight is only whole inside the head's own call: the
    loss then calls the module (hooks run) and gives the fused path's values and gradients."""
    _, head = causal_lm_parts(tiny_model)
    hidden = torch.randn(13, head.in_features, requires_grad=True)
    targets = torch.randint(0, head.out_features, (13,))
    want = chunked_token_losses(head, hidden, targets, 5).sum()
    (want_grad,) = torch.autograd.grad(want, hidden)
    calls: list[int] = []
    handle = head.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    head.weight.ds_id = 7  # what DeepSpeed puts on the parameters it partitions
    try:
        assert is_zero3_partitioned(head)
        got = chunked_token_losses(head, hidden, targets, 5).sum()
        (got_grad,) = torch.autograd.grad(got, hidden)
    finally:
        handle.remove()
        del head.weight.ds_id
    assert calls[:3] == [5, 5, 3]  # the head was called, chunk by chunk
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    assert not is_zero3_partitioned(head)
