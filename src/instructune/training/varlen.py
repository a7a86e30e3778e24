"""Variable-length ("varlen") attention for packed rows: each example attends to itself only.

Packed rows carry position_ids that restart at 0 for every example (data/packing.py). With
`sdpa`, transformers turns them into a [B, 1, L, L] block-causal mask: correct, but the kernel
still computes every masked block (and a masked sdpa cannot take the flash path on CUDA). Here the
batch is flattened to [B*L] tokens with cumulative example boundaries (`cu_seqlens`, read from
position_ids the way transformers reads them) and handed to a varlen kernel, so no
cross-example block is computed and no mask exists:

- CUDA: `torch.nn.attention.varlen.varlen_attn` (PyTorch's own flash varlen kernel, in every CUDA
  build of torch >= 2.9: nothing to install), with grouped-query heads natively where that torch
  supports them.
- elsewhere (the reference path, used by the tests on CPU): causal sdpa over each example in turn.

A padded batch (an attention_mask, not packed) is split the same way: wherever the mask changes
value a new segment starts, so padding only ever attends to padding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

VARLEN = "instructune_varlen"
"""The attention implementation name registered with transformers (`register_varlen`)."""


def register_varlen() -> str:
    """Register the varlen attention and its mask function with transformers; returns the name.

    The mask function is transformers' own flash one: None for packed rows (no mask is built),
    the 2D padding mask otherwise.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)
    return VARLEN


def segment_bounds(
    position_ids: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """(cu_seqlens [S+1] int32 over the flattened [B*L] tokens, longest segment) .

    A segment starts at every row start, wherever position_ids do not continue by +1 (the rule
    of `per_example_losses` and of transformers' packed-mask detection), and wherever the padding
    mask changes value.
    """
    rows, length = position_ids.shape
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = torch.diff(position_ids, dim=-1) != 1
    if padding_mask is not None:
        starts[:, 1:] |= padding_mask[:, 1:] != padding_mask[:, :-1]
    begin = torch.nonzero(starts.reshape(-1)).squeeze(1)
    end = torch.tensor([rows * length], device=begin.device, dtype=begin.dtype)
    cu = torch.cat([begin, end]).to(torch.int32)
    return cu, int(torch.diff(cu).max())


@torch.compiler.disable  # one kernel either way; keeps data-dependent bounds out of the graph
def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface: q [B, Hq, L, D], k/v [B, Hkv, L, D] → output
    [B, L, Hq, D] (and no weights). `position_ids` come in `kwargs` from the decoder layer."""
    if dropout:
        raise ValueError("varlen attention has no attention dropout; set it to 0 in the config")
    batch, heads, length, dim = query.shape
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = torch.arange(length, device=query.device)[None]
    cu, longest = _cached_bounds(positions, attention_mask, batch)
    # [B, H, L, D] -> [B*L, H, D], the varlen kernels' token-major layout
    q, k, v = (
        t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value)
    )
    if q.is_cuda:
        out = _flash_varlen(q, k, v, cu, longest, scaling)
    else:
        out = _segmentwise(q, k, v, cu, scaling)
    return out.reshape(batch, length, heads, dim), None


def varlen_available() -> bool:
    """Whether this torch has `torch.nn.attention.varlen` (2.9 and later)."""
    import importlib.util

    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def _flash_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu: torch.Tensor,
    longest: int,
    scale: float | None,
) -> torch.Tensor:
    import inspect

    from torch.nn.attention.varlen import varlen_attn

    names = set(inspect.signature(varlen_attn).parameters)
    kwargs, groups = varlen_kwargs(names, q.shape[1], k.shape[1], q.shape[-1], scale)
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out: Any = varlen_attn(q, k, v, cu, cu, longest, longest, **kwargs)
    return out  # type: ignore[no-any-return]


def varlen_kwargs(
    names: set[str], q_heads: int, kv_heads: int, head_dim: int, scale: float | None
) -> tuple[dict[str, Any], int]:
    """(keywords for this torch's `varlen_attn`, times to repeat key/value heads).

    Its keywords changed between releases: `is_causal` (2.9-2.11) or `window_size=(-1, 0)`;
    `enable_gqa` and `scale` only in later ones. Without `enable_gqa` the key/value heads are
    repeated here; without `scale` the kernel's 1/sqrt(head_dim) must be the model's.
    """
    kwargs: dict[str, Any] = {}
    if "window_size" in names:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    groups = 1
    if "enable_gqa" in names:
        kwargs["enable_gqa"] = True
    else:
        groups = q_heads // kv_heads
    if "scale" in names:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - head_dim**-0.5) > 1e-6:
        raise ValueError(
            f"this torch's varlen_attn has no `scale` and the model's is {scale}; "
            "use train.kernels: native"
        )
    return kwargs, groups


_last: list[Any] = []
"""The last (position_ids, mask, bounds): every layer of one forward (and its recomputation under
gradient checkpointing) gets the same position_ids tensor, so the bounds and their host sync are
computed once per forward, not once per layer. Holding the tensors keeps their ids from reuse."""


def _cached_bounds(
    positions: torch.Tensor, mask: torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, int]:
    """`segment_bounds` of this forward's position_ids, computed on its first layer only."""
    key = (positions, positions._version, mask, None if mask is None else mask._version, batch)
    if _last and all(_same(a, b) for a, b in zip(_last[0], key, strict=True)):
        return _last[1]  # type: ignore[no-any-return]
    # a [1, L] position_ids row broadcasts over the batch
    bounds = segment_bounds(positions.expand(batch, positions.shape[-1]), mask)
    _last[:] = [key, bounds]
    return bounds


def _same(a: Any, b: Any) -> bool:
    return a is b if isinstance(a, torch.Tensor) or a is None else bool(a == b)


def _segmentwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, scale: float | None
) -> torch.Tensor:
    """Causal sdpa per segment ([T, H, D] in, [T, Hq, D] out): the reference varlen path."""
    parts = []
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qs, ks, vs = (t[lo:hi].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scale, enable_gqa=True
        )
        parts.append(out.squeeze(0).transpose(0, 1))
    return torch.cat(parts)
