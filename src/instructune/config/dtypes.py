"""The weights dtypes by name: the one table behind `model.dtype`, `quantization.compute_dtype`,
the `--dtype` flags of `generate`/`chat`/`serve`/`merge`, and their conversion to `torch.dtype`.

GGUF's file types (f32, f16, bf16, q8_0; `ship.gguf_export`) are another vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

DtypeName = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[DtypeName, ...] = get_args(DtypeName)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called `name` (one of `DTYPES`); torch is imported only here, on use."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: choose one of {list(DTYPES)}")
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype
