"""Write a llama-architecture model as a GGUF file, by llama.cpp's conventions.

What `convert_hf_to_gguf.py` does for `LlamaForCausalLM`, for the part of it we support (dense
llama without rope scaling or biases, byte-level BPE tokenizer): tensor names from gguf-py's own
name map (`token_embd`, `blk.N.attn_q`, …, `output_norm`, `output`), q/k rows permuted from HF's
split-half rotary layout into llama.cpp's interleaved one (`LlamaModel.permute`; transformers'
GGUF loader reverses it), 1-D tensors in F32 and the rest in the requested type (Q8_0 falls back
to F16 for a row length that is not a multiple of 32, as llama.cpp's converter does), and the
hyperparameter keys `TextModel`/`LlamaModel.set_gguf_parameters` write.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from instructune.ship.gguf_vocab import add_vocab

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama",)
# --dtype → (GGML type of 2-D tensors, general.file_type).
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")


def write_gguf(
    model: Any, tokenizer: Any, chat_template: str, path: Path, dtype: str, name: str
) -> dict[str, Any]:
    """Write `model` (a dense llama in memory) with its tokenizer to `path`; returns a summary."""
    import gguf

    config = model.config
    check_supported(config)
    tensor_type, file_type = _types(dtype)
    writer = gguf.GGUFWriter(str(path), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        _add_hparams(writer, config)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab = add_vocab(writer, tokenizer, config.vocab_size, chat_template)
        counts = _add_tensors(writer, model, tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=True)
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)  # never leave half a file that looks like a model
        raise
    writer.close()
    return {"tensor_types": dict(counts), "tokenizer": vocab}


def check_supported(config: Any) -> None:
    """One-line ValueError naming what is supported, for anything this writer would get wrong."""
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"export --format gguf supports {list(SUPPORTED_ARCHITECTURES)} models (e.g. SmolLM2, "
            f"Llama 2/3 without rope scaling); this model is {kind!r}"
        )
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"export --format gguf supports llama with default rope only; this model has rope_type "
            f"{rope.get('rope_type')!r}"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValueError("export --format gguf supports llama without attention/mlp biases")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"export --format gguf supports llama with silu, not {config.hidden_act}")


def _types(dtype: str) -> tuple[Any, int]:
    import gguf

    table = {
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }
    if dtype not in table:
        raise ValueError(
            f"--dtype {dtype!r} is not supported for GGUF; choose one of {GGUF_DTYPES}"
        )
    tensor_type, file_type = table[dtype]
    return tensor_type, int(file_type)


def _add_hparams(writer: Any, config: Any) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = dict(getattr(config, "rope_parameters", None) or {})
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        # llama.cpp derives head size from embedding_length / head_count unless told otherwise.
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _add_tensors(writer: Any, model: Any, tensor_type: Any) -> Counter[str]:
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    counts: Counter[str] = Counter()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads a missing `output` as tied to `token_embd`
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"export --format gguf: no llama.cpp name for tensor {hf_name!r}")
        data = tensor.detach().float().cpu()
        if hf_name.endswith("q_proj.weight"):
            data = permute(data, heads, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute(data, heads, kv_heads)
        array, kind = _encode(data.numpy(), tensor_type)
        writer.add_tensor(gguf_name, array, raw_dtype=kind)
        counts[kind.name] += 1
    return counts


def permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs), per head, as
    `LlamaModel.permute`; keys use the kv head count."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(array: Any, tensor_type: Any) -> tuple[Any, Any]:
    """The bytes (or float array) to store and their GGML type: 1-D tensors stay F32."""
    import gguf
    import numpy as np

    f32 = gguf.GGMLQuantizationType.F32
    if array.ndim <= 1 or tensor_type == f32:
        return array.astype(np.float32), f32
    try:
        return gguf.quants.quantize(array, tensor_type), tensor_type
    except gguf.QuantError:  # rows not a multiple of the block size: llama.cpp's F16 fallback
        log.warning("%s can't hold shape %s; storing F16", tensor_type.name, array.shape)
        f16 = gguf.GGMLQuantizationType.F16
        return gguf.quants.quantize(array, f16), f16


__all__ = ["GGUF_DTYPES", "SUPPORTED_ARCHITECTURES", "check_supported", "permute", "write_gguf"]
