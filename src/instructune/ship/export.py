"""`run_export(run, out, format="gguf", dtype=...)`: one file llama.cpp and Ollama load, proved.

A LoRA run is merged first (into a dense float32 base, as `merge` does); a merged folder or any
model path is exported as it is. The file is then read back with transformers' GGUF loader, and
its logits are compared with the model's on held-out prompts (the parity report of `merge`, with
the tolerance of the stored type), and its tokenizer must encode sample texts to the same ids and
carry the run's chat template. The report is written next to the file (`model.parity.json`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.bundle import load_bundle
from instructune.rundir import RunDir
from instructune.ship.merge import check_mergeable
from instructune.ship.parity import (
    ParityReport,
    compare_logits,
    compute_logits,
    encode_texts,
    parity_texts,
)

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("gguf",)
PARITY_SUFFIX = ".parity.json"  # the report next to the file: model.gguf → model.parity.json
# --dtype → the parity tolerance row (ship.parity.TOLERANCES) for that storage.
_STORAGE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "q8_0": "q8_0"}
# Beyond the prompts: whitespace runs, digits, non-Latin scripts, emoji, specials written inline.
SAMPLE_TEXTS = (
    "Hello world! How are you today?",
    "  leading spaces,\ttabs\nand new lines\n\n",
    "Numbers: 3 33 333 3333 12345.678 and 2024-11-29",
    "Unicode: héllo wörld, 你好, привет, 🚀🦙",
    "<|im_start|>user\nhi<|im_end|>\n",
    "I've been told he's there, 'RE you sure? We'Ve a'lL",
)


@dataclass
class ExportResult:
    path: Path
    parity: ParityReport
    report_path: Path
    report: dict[str, Any] = field(default_factory=dict)


def run_export(
    run: str | Path, out: str | Path, *, format: str = "gguf", dtype: str = "f32", prompts: int = 4
) -> ExportResult:
    """Export `run` (a LoRA run, merged folder or model path) to the GGUF file `out` and check it.

    Raises ParityError (logits) or ValueError (tokenizer) after writing the file and its report
    when the file does not reproduce the model.
    """
    import torch

    from instructune.models import merge_adapter
    from instructune.ship.gguf_export import check_supported, write_gguf

    source = RunDir(Path(run))
    check_mergeable(source)  # a prompt/prefix-tuning run has no weights to fold into the file
    path = _fresh_file(Path(out), format, dtype)
    bundle = load_bundle(run, dtype=torch.float32)
    check_supported(bundle.model.config)
    template_text = bundle.template.source_text
    owner = source if source.path.is_dir() else None
    texts, prompt_source = parity_texts(owner, bundle.template, prompts)
    ids = encode_texts(bundle.tokenizer, texts)
    model = merge_adapter(bundle.model) if bundle.adapters else bundle.model
    reference = compute_logits(model, ids)
    summary = write_gguf(model, bundle.tokenizer, template_text, path, dtype, name=bundle.name)
    del model
    bundle.model = None  # free the weights before the file is read back
    reloaded = load_bundle(path, dtype=torch.float32)
    parity = compare_logits(
        reference,
        compute_logits(reloaded.model, ids),
        storage=_STORAGE[dtype],
        names=("merged" if bundle.adapters else "model", f"gguf {dtype}"),
        prompt_source=prompt_source,
    )
    tokenizer = tokenizer_roundtrip(bundle.tokenizer, reloaded.tokenizer, [*texts, *SAMPLE_TEXTS])
    tokenizer["chat_template_equal"] = reloaded.tokenizer.chat_template == template_text
    report = {
        "file": str(path),
        "format": format,
        "dtype": dtype,
        "source": str(run),
        "merged_adapters": bundle.adapters,
        "bytes": path.stat().st_size,
        **summary,
        "parity": parity.to_dict(),
        "tokenizer_roundtrip": tokenizer,
    }
    report_path = path.with_suffix(PARITY_SUFFIX)
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    log.debug(parity.summary())  # the CLI prints it; INFO would repeat it
    parity.check()
    _check_tokenizer(tokenizer, path)
    return ExportResult(path, parity, report_path, report)


def tokenizer_roundtrip(original: Any, exported: Any, texts: list[str]) -> dict[str, Any]:
    """Encode each text with both tokenizers (with and without special tokens); list the texts
    whose ids differ, and compare the special token ids."""
    mismatches = []
    for text in texts:
        for special in (False, True):
            a = original(text, add_special_tokens=special)["input_ids"]
            b = exported(text, add_special_tokens=special)["input_ids"]
            if list(a) != list(b):
                mismatches.append({"text": text, "add_special_tokens": special})
    names = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
    special_ids = {n: [getattr(original, n), getattr(exported, n)] for n in names}
    return {
        "texts": len(texts),
        "mismatches": mismatches,
        "special_ids": special_ids,
        "special_ids_equal": all(a == b for a, b in special_ids.values()),
    }


def _check_tokenizer(report: dict[str, Any], path: Path) -> None:
    problems = []
    if report["mismatches"]:
        first = report["mismatches"][0]["text"]
        problems.append(f"{len(report['mismatches'])} sample encodings differ (first: {first!r})")
    if not report["special_ids_equal"]:
        problems.append(f"special token ids differ {report['special_ids']}")
    if not report["chat_template_equal"]:
        problems.append("the chat template differs from the run's")
    if problems:
        raise ValueError(f"{path}: the GGUF tokenizer does not round-trip: {'; '.join(problems)}")


def _fresh_file(out: Path, format: str, dtype: str) -> Path:
    from instructune.ship.gguf_export import GGUF_DTYPES

    if format not in EXPORT_FORMATS:
        raise ValueError(f"--format {format!r} is not supported; choose one of {EXPORT_FORMATS}")
    if dtype not in GGUF_DTYPES:
        raise ValueError(
            f"--dtype {dtype!r} is not supported for GGUF; choose one of {GGUF_DTYPES}"
        )
    out = out.expanduser()
    if out.suffix != ".gguf":
        raise ValueError(f"--out {out} must be a .gguf file name")
    # the parity report lands next to the file: the same rule for both
    for path in (out, out.with_suffix(PARITY_SUFFIX)):
        if path.exists():
            raise ValueError(
                f"--out {out}: {path} exists; choose a new file name (export never overwrites)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


__all__ = ["EXPORT_FORMATS", "SAMPLE_TEXTS", "ExportResult", "run_export", "tokenizer_roundtrip"]
