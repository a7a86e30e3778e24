"""The tokenizer as GGUF metadata, the way llama.cpp's `convert_hf_to_gguf.py` writes a GPT-2
style byte-level BPE vocabulary (`_set_vocab_gpt2` / `get_vocab_base`).

`tokenizer.ggml.tokens` lists every id up to the model's vocabulary size (ids the tokenizer lacks
become `[PAD<id>]`, UNUSED); added tokens are CONTROL when special (or shaped like `<|...|>`),
USER_DEFINED otherwise; the rest NORMAL. Merges, special token ids and the add-BOS flag come from
gguf-py's `SpecialVocab` reading the saved tokenizer files, as llama.cpp does; the chat template
is the run's, so llama.cpp and Ollama prompt the model the way it was trained.

llama.cpp names the pre-tokenizer (`tokenizer.ggml.pre`) by hashing the ids of a probe text
against a table of known models. We read it from `tokenizer.json` instead, which states the same
thing directly: GPT-2's regex alone is `gpt-2`, digits split before it is `smollm`, Llama 3's
split regex is `llama-bpe`. Anything else is refused: llama.cpp would split text differently.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

# pre-tokenizer name → what `tokenizer.json` holds for it (see `_pre_tokenizer_name`).
PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe")

# The split regex of Llama 3's tokenizer.json, which llama.cpp calls `llama-bpe`.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def add_vocab(writer: Any, tokenizer: Any, vocab_size: int, chat_template: str) -> dict[str, Any]:
    """Write the tokenizer keys into `writer`; returns a summary for the export report."""
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        spec = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
        pre, add_prefix_space = _pre_tokenizer_name(spec)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size)
    tokens, types = vocab_list(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_add_space_prefix(add_prefix_space)
    special.chat_template = chat_template
    # Whether the HF tokenizer adds BOS (add_special_tokens=True), stated explicitly: llama.cpp's
    # default for a gpt2 vocabulary would otherwise decide (its converter hard-codes False for
    # 49152-token vocabularies like SmolLM2's for the same reason).
    probe = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = bool(probe) and probe[0] == tokenizer.bos_token_id
    special.add_to_gguf(writer, quiet=True)
    return {
        "model": "gpt2",
        "pre": pre,
        "tokens": len(tokens),
        "merges": len(special.merges),
        "special_ids": dict(special.special_token_ids),
        "add_bos": special.add_special_token["bos"],
    }


def vocab_list(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """`tokenizer.ggml.tokens` and `tokenizer.ggml.token_type`, by llama.cpp's rules."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= vocab_size:
        raise ValueError(
            f"the tokenizer has id {max(by_id)} but the model's vocab_size is {vocab_size}; "
            "resize the embeddings before exporting"
        )
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        kind = gguf.TokenType.NORMAL
        if token in added:
            # llama.cpp expects added tokens pre-normalized: spell them as the tokenizer decodes.
            if not decoder[index].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = decoder[index].special or _looks_special(token)
            kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        tokens.append(token)
        types.append(kind)
    return tokens, types


def _looks_special(token: str) -> bool:
    # llama.cpp's `does_token_look_special`: added tokens some models forget to mark special.
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _pre_tokenizer_name(spec: dict[str, Any]) -> tuple[str, bool]:
    """(llama.cpp's pre-tokenizer name, add_prefix_space) for a byte-level BPE tokenizer.json."""
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if model.get("type") != "BPE" or byte_level is None:
        raise ValueError(
            f"export --format gguf supports byte-level BPE tokenizers (GPT-2 style, "
            f"pre-tokenizers {list(PRE_TOKENIZERS)}); this one is {model.get('type')} with "
            f"pre-tokenizer {kinds or 'none'}"
        )
    prefix = bool(byte_level.get("add_prefix_space", False))
    regex = byte_level.get("use_regex", True)
    if kinds == ["ByteLevel"] and regex:
        return "gpt-2", prefix
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and regex:
        return "smollm", prefix
    split = steps[0].get("pattern", {}).get("Regex") if kinds == ["Split", "ByteLevel"] else None
    if split == _LLAMA3_REGEX and not regex:
        return "llama-bpe", prefix
    raise ValueError(
        f"export --format gguf: the tokenizer's pre-tokenizer {kinds} is not one llama.cpp knows "
        f"by structure; supported: {list(PRE_TOKENIZERS)}"
    )


__all__ = ["PRE_TOKENIZERS", "add_vocab", "vocab_list"]
