"""RUN (a training output_dir, a merged folder or any model path) → a bundle, an `Engine`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from instructune.inference.engine import Engine


def load_run(
    run: str, template: str | None = None, dtype: str | None = None, adapters: Sequence[str] = ()
) -> Any:
    """`bundle.load_bundle` with the CLI's spelling of dtypes (one of `config.dtypes.DTYPES`)."""
    from instructune.bundle import load_bundle
    from instructune.config.dtypes import torch_dtype

    dtype_ = torch_dtype(dtype) if dtype else None
    return load_bundle(run, adapters=adapters, dtype=dtype_, template=template)


def load_engine(
    run: str,
    template: str | None = None,
    dtype: str | None = None,
    adapters: Sequence[str] = (),
    **engine_kwargs: Any,
) -> Engine:
    return Engine.from_bundle(load_run(run, template, dtype, adapters), **engine_kwargs)
