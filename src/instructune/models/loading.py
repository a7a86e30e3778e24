"""Load the tokenizer and the causal LM for a `ModelConfig`, in the dtype and form a method needs.

`auto` precision picks bfloat16 only where the hardware computes it natively: a CUDA GPU that
supports it, or a CPU with AVX512-BF16 / AMX (x86) or the BF16 extension (Arm). oneDNN also runs
bfloat16 on plain AVX512 by emulation, so "a bf16 matmul works" is no test: on such a CPU a forward
and backward of SmolLM2-135M took 54 s in bfloat16 against 5 s in float32.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.config.dtypes import torch_dtype
from instructune.config.methods import QuantizationConfig
from instructune.config.schema import Method, ModelConfig
from instructune.models.resolve import (
    ResolvedModel,
    check_hub_reachable,
    has_tokenizer_files,
    resolve_model,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512/AMX, Arm `bf16` feature


def load_tokenizer(cfg: ModelConfig, resolved: ResolvedModel | None = None) -> Any:
    """The model's fast tokenizer; with no pad token, pad is set to eos (our labels never use pad).

    Labels are masked by the collator's attention layout, never by comparing ids to `pad_token_id`,
    so pad == eos can't hide the eos targets; a pad token the model ships with is kept.
    """
    from transformers import AutoTokenizer

    resolved = resolved or resolve_model(cfg)
    if resolved.kind == "hub":
        check_hub_reachable(cfg)
    if resolved.kind in ("folder", "embedded") and not has_tokenizer_files(Path(resolved.path)):
        raise FileNotFoundError(
            f"{resolved.path} has no tokenizer files (tokenizer.json, tokenizer.model, "
            "vocab.json); save the tokenizer next to the model "
            "(tokenizer.save_pretrained(folder)) or copy them from the model you fine-tuned"
        )
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, **_source_kwargs(cfg, resolved))
    return prepare_tokenizer(tokenizer, cfg.path)


def prepare_tokenizer(tokenizer: Any, name: str) -> Any:
    """Check a loaded tokenizer is fast, and set pad to eos when it has no pad token (the one pad
    rule; see load_tokenizer). Tokenizers saved in a run folder pass here too."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{name} loaded a slow tokenizer ({type(tokenizer).__name__}); instructune needs "
            "a fast one (tokenizer.json). Convert it with `tokenizers` or pick another model"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"the tokenizer of {name} has neither a pad nor an eos token; add an eos token "
                "to its tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer has no pad token; using eos %r as pad", tokenizer.eos_token)
    return tokenizer


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the pad token, else eos (what `prepare_tokenizer` sets)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"the tokenizer {name!r} has neither a pad nor an eos token to pad with")
    return int(pad)


def resolve_dtype(precision: str, model_dtype: str, *, for_training: bool = True) -> torch.dtype:
    """The weights dtype: `model.dtype` when set, else from `train.precision`.

    `precision` is `train.precision` (auto, bf16, fp16, fp32); `model_dtype` is `model.dtype` (auto,
    bfloat16, float16, float32). Outside training, `auto` means float32 on CPU.
    """
    import torch

    names = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    choice = names.get(model_dtype, precision) if model_dtype != "auto" else precision
    device = best_device()
    if choice == "auto":
        if not for_training and device == "cpu":
            return torch.float32
        choice = "bf16" if bf16_supported() else "fp32"
    if choice == "fp16" and device == "cpu":
        raise ValueError(
            "float16 is not supported for CPU training/inference here; use precision bf16 or fp32 "
            "(or auto)"
        )
    if choice == "bf16" and not bf16_supported():
        logger.warning(
            "bfloat16 requested but this %s has no native bf16; it will be emulated and slow "
            "(float32 is typically ~10x faster on such CPUs)",
            device,
        )
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if choice not in dtypes:
        raise ValueError(f"unknown precision {choice!r}; use auto, bf16, fp16 or fp32")
    return dtypes[choice]


def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def bf16_supported() -> bool:
    """Whether the device we'd train on computes bfloat16 natively (emulation doesn't count)."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return True
    return bool(_CPU_BF16_FLAGS & _cpu_flags())


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust only torch's own checks
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def load_model(
    cfg: ModelConfig,
    dtype: torch.dtype,
    method: Method,
    quantization: QuantizationConfig | None = None,
    for_training: bool = True,
    *,
    resolved: ResolvedModel | None = None,
    reward_head: bool = False,
) -> Any:
    """The causal LM for `cfg`: dense in `dtype`, or 4-bit (bitsandbytes) for `method: qlora`.
    `reward_head`: the same body with a one-output sequence-classification head (a reward model;
    the head is new, the rest is the causal LM's weights)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    resolved = resolved or resolve_model(cfg)
    if resolved.kind == "hub":
        check_hub_reachable(cfg)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        # transformers' own default (None) is sdpa falling back to eager for the architectures
        # sdpa can't run (Gemma 2's softcapped attention); an explicit "sdpa" would raise there
        "attn_implementation": None
        if cfg.attn_implementation == "sdpa"
        else cfg.attn_implementation,
        "trust_remote_code": cfg.trust_remote_code,
    }
    if method == "qlora":
        # bitsandbytes can't quantize while loading a GGUF: load it from its converted folder.
        resolved = _gguf_as_folder(cfg, resolved)
        kwargs["quantization_config"] = bnb_config(quantization or QuantizationConfig())
        # bitsandbytes needs a device_map. Elsewhere we avoid one: the Trainer reads any
        # `hf_device_map` as a placement it must not touch.
        kwargs["device_map"] = {"": _device_index()}
    auto: Any = AutoModelForCausalLM
    if reward_head:
        auto, kwargs["num_labels"] = AutoModelForSequenceClassification, 1
        resolved = _gguf_as_folder(cfg, resolved)  # the GGUF loader maps causal-LM tensors only
    kwargs |= _source_kwargs(cfg, resolved)
    if resolved.gguf_file:
        from instructune.models.embedded import gguf_load_kwargs

        kwargs |= gguf_load_kwargs(resolved.gguf_file)
    model: Any = auto.from_pretrained(resolved.path, **kwargs)
    if resolved.gguf_file:
        from instructune.models.embedded import detach_gguf_quantizer

        detach_gguf_quantizer(model)
    if "device_map" not in kwargs and best_device() != "cpu":
        model.to(_device_index())
    if for_training:
        model.config.use_cache = False  # the KV cache is useless in training and clashes with GC
    model.train(for_training)  # from_pretrained returns eval mode; dropout must be on to train
    return model


def bnb_config(quantization: QuantizationConfig) -> Any:
    """The bitsandbytes 4-bit config (bitsandbytes >= 0.49 runs nf4/fp4 on CPU too)."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(quantization.compute_dtype)
    if compute is torch.bfloat16 and not bf16_supported():
        logger.warning(
            "quantization.compute_dtype is bfloat16 but this %s has no native bf16; "
            "set quantization.compute_dtype: float32 for speed",
            best_device(),
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=quantization.double_quant,
    )


def describe_model(model: Any) -> dict[str, Any]:
    """Parameter counts, dtype, device and quantization, for the run manifest."""
    total = trainable = 0
    dtypes: dict[str, int] = {}
    for param in model.parameters():
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            count *= 2  # two 4-bit values per stored byte
        else:
            name = str(param.dtype).removeprefix("torch.")
            dtypes[name] = dtypes.get(name, 0) + count
        total += count
        trainable += count if param.requires_grad else 0
    first = next(model.parameters(), None)
    quantized = bool(getattr(model, "is_loaded_in_4bit", False))
    return {
        "class": type(model).__name__,
        "params_total": total,
        "params_trainable": trainable,
        "dtype": max(dtypes, key=dtypes.__getitem__) if dtypes else None,
        "device": str(first.device) if first is not None else None,
        "quantization": "bnb-4bit" if quantized else None,
    }


def _device_index() -> int | str:
    import torch

    # The current CUDA device is the process's own under torchrun/accelerate launch.
    return torch.cuda.current_device() if torch.cuda.is_available() else "cpu"


def _source_kwargs(cfg: ModelConfig, resolved: ResolvedModel) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if resolved.kind == "hub" and cfg.revision:
        kwargs["revision"] = cfg.revision
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    return kwargs


def _gguf_as_folder(cfg: ModelConfig, resolved: ResolvedModel) -> ResolvedModel:
    if not resolved.gguf_file:
        return resolved
    from instructune.models.embedded import ensure_converted_gguf

    if resolved.kind == "hub":
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(resolved.path, resolved.gguf_file, revision=cfg.revision)
        return ResolvedModel("folder", str(ensure_converted_gguf(Path(local))))
    gguf = Path(resolved.path) / resolved.gguf_file
    return ResolvedModel("folder", str(ensure_converted_gguf(gguf)))
