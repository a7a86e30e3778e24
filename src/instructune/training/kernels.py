"""`train.kernels`: which implementation runs the loss, the small layers and packed attention.

- LM head + cross-entropy: our chunked fused loss (`models.losses.LinearCrossEntropy`) with `native`
  and on CPU; Liger's fused linear cross-entropy (Triton) with `auto`/`liger` on a CUDA GPU when
  `liger_kernel` is installed.
- RMSNorm, RoPE, SwiGLU: the model's own (fused by `train.compile` where it pays), or Liger's
  kernels patched into this model instance.
- Attention of packed rows: the model's `attn_implementation` (sdpa builds a block-causal mask),
  or on CUDA varlen attention (`training/varlen.py`): one flash varlen call over the examples,
  no mask, no cross-example blocks computed.

`auto` takes Liger only where it is installed (`pip install 'instructune[gpu]'`, which needs
Triton and a CUDA torch); `liger` insists on it and fails early, naming the extra, when it is
missing or there is no GPU. The plan is logged and written to the run's manifest, so a result
says which path produced it. Evaluation always runs the chunked loss (no gradient: nothing to
fuse), so eval losses are computed the same way whichever path trained.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from instructune.config import ConfigError
from instructune.models.logprobs import TrainedTargets
from instructune.models.losses import is_zero3_partitioned

logger = logging.getLogger(__name__)

KernelSetting = Literal["auto", "liger", "native"]
LIGER_EXTRA = "pip install 'instructune[gpu]'"
LIGER_MODULE = "liger_kernel"


@dataclass(frozen=True)
class KernelPlan:
    """What runs where; `describe()` goes into the manifest and the log."""

    setting: str
    device: str
    loss: Literal["liger", "chunked"] = "chunked"
    layers: Literal["liger", "native"] = "native"
    attention: str | None = None
    """An attention implementation to switch the model to, or None to keep the model's own."""

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def liger_installed() -> bool:
    """Whether Liger Kernel can be imported (it needs Triton, hence a CUDA build of torch)."""
    return importlib.util.find_spec(LIGER_MODULE) is not None


def select_kernels(
    setting: str,
    device: str,
    packed: bool,
    attn_implementation: str = "sdpa",
    liger: bool | None = None,
) -> KernelPlan:
    """The plan for `train.kernels: setting` on `device` ("cuda", "cpu", ...). `packed`: the
    training rows are packed; only then is attention switched to varlen, and only from the
    default `sdpa` (an explicit `model.attn_implementation` is kept). `liger`: whether Liger is
    installed (default: look)."""
    if setting not in ("auto", "liger", "native"):
        raise ConfigError(
            f"train.kernels: {setting!r} is not a kernel choice; allowed: auto, liger, native"
        )
    liger = liger_installed() if liger is None else liger
    if setting == "liger" and device != "cuda":
        raise ConfigError(
            f"train.kernels: liger needs a CUDA GPU (Liger's kernels are Triton), and this run is "
            f"on {device}; use auto or native"
        )
    if setting == "liger" and not liger:
        raise ConfigError(
            f"train.kernels: liger, but liger_kernel is not installed; {LIGER_EXTRA}, "
            "or use auto (Liger where installed) or native"
        )
    if setting == "native" or device != "cuda":
        return KernelPlan(setting, device)
    use_liger = liger  # auto or liger, on CUDA
    varlen = packed and attn_implementation == "sdpa" and _varlen_available()
    return KernelPlan(
        setting,
        device,
        loss="liger" if use_liger else "chunked",
        layers="liger" if use_liger else "native",
        attention=_varlen_name() if varlen else None,
    )


def _varlen_available() -> bool:
    from instructune.training.varlen import varlen_available

    return varlen_available()


def _varlen_name() -> str:
    from instructune.training.varlen import VARLEN

    return VARLEN


def apply_kernels(model: nn.Module, plan: KernelPlan) -> KernelPlan:
    """Patch `model` (the base model, before PEFT wraps it) as `plan` says; returns the plan as
    applied (`layers` is native when Liger has no kernels for this model type)."""
    if plan.layers == "liger":
        from liger_kernel.transformers import monkey_patch

        model_type = getattr(model.config, "model_type", None)
        if model_type in monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN:
            # the loss is ours to call (summed_token_loss), so Liger leaves the head alone
            monkey_patch._apply_liger_kernel_to_instance(
                model=model,
                rms_norm=True,
                rope=True,
                swiglu=True,
                cross_entropy=False,
                fused_linear_cross_entropy=False,
            )
        else:
            plan = KernelPlan(plan.setting, plan.device, plan.loss, "native", plan.attention)
    if plan.attention is not None:
        from instructune.training.varlen import register_varlen

        register_varlen()
        set_attn: Any = model.set_attn_implementation
        set_attn(plan.attention)
    logger.info("kernels: %s", plan.describe())
    return plan


def wants_liger_layers(plan: KernelPlan | None) -> bool:
    """Liger's layer kernels replace what `train.compile: auto` would fuse: auto skips compiling."""
    return plan is not None and plan.layers == "liger"


def summed_token_loss(
    plan: KernelPlan | None,
    trained: TrainedTargets,
    chunk_size: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Summed cross-entropy over the trained targets (a 0-d fp32 tensor): Liger's fused linear
    cross-entropy when the plan says so and a gradient is wanted, else our chunked loss (the
    token losses evaluation and DPO use, `TrainedTargets.losses`)."""
    lm_head, hidden, targets = trained.lm_head, trained.hidden, trained.targets
    fused = (
        plan is not None
        and plan.loss == "liger"
        and type(lm_head) is nn.Linear
        and not is_zero3_partitioned(lm_head)
        and torch.is_grad_enabled()
        and hidden.requires_grad
        and targets.numel() > 0
    )
    if not fused:
        return trained.losses(chunk_size, label_smoothing).sum()
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    weight = cast(torch.Tensor, lm_head.weight)
    total: torch.Tensor = liger_fused_linear_cross_entropy(
        hidden.to(weight.dtype),
        weight,
        targets,
        bias=lm_head.bias,
        label_smoothing=label_smoothing,
        softcap=trained.softcap,
        reduction="sum",
    )
    return total.float()
