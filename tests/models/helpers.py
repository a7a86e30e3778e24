"""Comparing two models' outputs, for the loading and adapter tests."""

from __future__ import annotations

from typing import Any

import torch


def logit_parity(model_a: Any, model_b: Any, input_ids: torch.Tensor) -> float:
    """Max absolute difference of the two models' logits on `input_ids` (eval mode, no grad)."""
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        with torch.no_grad():
            a = model_a(input_ids=input_ids.to(model_a.device)).logits.float().cpu()
            b = model_b(input_ids=input_ids.to(model_b.device)).logits.float().cpu()
    finally:
        model_a.train(modes[0])
        model_b.train(modes[1])
    return float((a - b).abs().max())
