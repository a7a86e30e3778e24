"""Models: resolve `model.path`, convert the embedded GGUF once, load, and wrap for a method.

Importing this package is cheap: torch, transformers and peft are imported inside the functions.
"""

from instructune.models.embedded import cache_root, ensure_converted_gguf, ensure_embedded_model
from instructune.models.loading import (
    bf16_supported,
    describe_model,
    load_model,
    load_tokenizer,
    pad_token_id,
    prepare_tokenizer,
    resolve_dtype,
)
from instructune.models.peft_setup import (
    apply_method,
    linear_module_names,
    merge_adapter,
    save_adapter,
)
from instructune.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "ResolvedModel",
    "apply_method",
    "bf16_supported",
    "cache_root",
    "describe_model",
    "ensure_converted_gguf",
    "ensure_embedded_model",
    "linear_module_names",
    "load_model",
    "load_tokenizer",
    "merge_adapter",
    "pad_token_id",
    "prepare_tokenizer",
    "resolve_dtype",
    "resolve_model",
    "save_adapter",
]
