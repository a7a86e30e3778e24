"""Which base model an adapter belongs to: recorded by training, checked wherever one is attached.

Two bases of one architecture and size (a model and its instruct version, a folder whose weights
were replaced) take each other's adapters without a shape error and answer nonsense. A training
run records its base in `manifest.json` (`base_model`): the config's shape keys and a fingerprint
of weights no adapter method changes or quantizes: the first rows of the input embedding and every
1-D tensor (the norms, biases). That is about 0.1% of an 8B model, hashed after rounding to bf16,
so the same base loaded in float32, bf16 or under 4-bit QLoRA (which leaves those tensors dense)
gives the same fingerprint. `check_base` refuses an adapter whose record differs from the model it
is about to join; a run trained before the record existed loads with a warning.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from instructune.rundir import RunDir

log = logging.getLogger(__name__)

BASE_MODEL_KEY = "base_model"
"""The manifest key of the record."""
CONFIG_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
EMBEDDING_ROWS = 256
_ADAPTER_PARTS = ("lora_", "modules_to_save", "ia3_", "prompt_encoder")
"""Parameter names an attached peft adapter adds: never part of the base's fingerprint."""


def base_identity(model: Any) -> dict[str, Any]:
    """`model`'s record (name, shape keys, weights fingerprint), adapters attached or not."""
    plain = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(plain, "config", None)
    shape = {k: getattr(config, k) for k in CONFIG_KEYS if getattr(config, k, None) is not None}
    name = getattr(plain, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return {
        "name": str(name or type(plain).__name__),
        "config": shape,
        "fingerprint": _digest(plain),
    }


def _digest(model: Any) -> str | None:
    import torch

    tensors = []
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    # under peft the embedding may be wrapped: the base's own weight is underneath
    embedding = getattr(embedding, "original_module", embedding)
    embedding = getattr(embedding, "base_layer", embedding)
    weight = getattr(embedding, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 2:
        tensors.append(weight[:EMBEDDING_ROWS])
    for name, param in model.named_parameters():
        if param.ndim == 1 and param.is_floating_point() and not _from_adapter(name):
            tensors.append(param)
    tensors = [t for t in tensors if t.device.type != "meta"]
    if not tensors:
        return None
    digest = hashlib.sha256()
    with torch.no_grad():
        for t in tensors:
            # bf16 is the coarsest dtype a base is loaded in: round everything to it
            values = t.detach().to("cpu", torch.bfloat16).contiguous()
            digest.update(values.view(torch.int16).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _from_adapter(name: str) -> bool:
    # a reward model's `score` head is new at every load (its trained copy is in the adapter)
    return any(part in name for part in _ADAPTER_PARTS) or name.startswith("score.")


def recorded_base(adapter_dir: Path) -> dict[str, Any] | None:
    """The `base_model` record of the run `adapter_dir` belongs to (its checkpoint folders read
    the run's manifest); None when there is none or it can't be read."""
    manifest = RunDir(adapter_dir).manifest()
    record = manifest.get(BASE_MODEL_KEY) if isinstance(manifest, dict) else None
    return record if isinstance(record, dict) else None


def check_adapter_base(adapter_dir: Path, base_model: Any) -> None:
    """`check_base` of the adapter's record against `base_model` (adapters attached or not)."""
    check_base(adapter_dir, recorded_base(adapter_dir), base_identity(base_model))


def check_base(adapter_dir: Path, recorded: dict[str, Any] | None, here: dict[str, Any]) -> None:
    """Refuse `adapter_dir` if its run `recorded` another base than `here` (a one-line error
    naming both); warn when there is no record (a run from before it was kept)."""
    if not recorded:
        log.warning(
            "%s records no base model identity (trained before instructune kept it): can't check "
            "that it belongs to %s",
            adapter_dir,
            here["name"],
        )
        return
    theirs, ours = recorded.get("fingerprint"), here.get("fingerprint")
    same_shape = recorded.get("config", {}) == here.get("config", {})
    if same_shape and (theirs is None or ours is None or theirs == ours):
        return
    what = "weights" if same_shape else "shape"
    raise ValueError(
        f"adapter {adapter_dir} was trained on {recorded.get('name')} ({_short(theirs)}) but is "
        f"being attached to {here['name']} ({_short(ours)}): a base of different {what}, so "
        "its output would be meaningless; load it on the base it was trained on"
    )


def _short(fingerprint: str | None) -> str:
    return f"weights {fingerprint[7:19]}" if fingerprint else "weights not fingerprinted"
