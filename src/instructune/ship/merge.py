"""`run_merge(run, out)`: fold a LoRA run's adapter into its base and prove the result is the same.

The base is always loaded dense (float32 unless `dtype` says otherwise), also for QLoRA runs: a
merge into 4-bit weights would re-quantize the sum and lose the adapter's small updates. The
reference logits are taken from base + adapter before merging; the merged folder is then saved
(safetensors, tokenizer, `template.jinja`, manifest), loaded back from disk and compared, so the
check covers what a user will load, not the in-memory object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.bundle import load_bundle
from instructune.config.dtypes import torch_dtype
from instructune.rundir import ADAPTER_CONFIG_FILE, RunDir
from instructune.ship.parity import (
    ParityReport,
    compare_logits,
    compute_logits,
    parity_prompts,
)

if TYPE_CHECKING:
    from instructune.bundle import Bundle

log = logging.getLogger(__name__)


@dataclass
class MergeResult:
    out_dir: Path
    parity: ParityReport
    files: dict[str, Path] = field(default_factory=dict)


def run_merge(
    run: str | Path, out: str | Path, *, dtype: str = "float32", prompts: int = 4
) -> MergeResult:
    """Merge the adapter of the LoRA run `run` into its base, save it to `out`, check parity.

    Writes the model (safetensors), tokenizer, `template.jinja`, `parity.json` and the manifest
    into `out`; raises ParityError after writing them when the reloaded model's logits are out of
    the tolerance for `dtype`.
    """
    weights_dtype = torch_dtype(dtype)
    source = RunDir(Path(run))
    check_mergeable(source)
    out_dir = _fresh_output(source, Path(out))
    bundle = load_bundle(source.path, dtype=weights_dtype)
    ids, prompt_source = parity_prompts(source, bundle.template, bundle.tokenizer, prompts)
    reference = compute_logits(bundle.model, ids)
    merge_into(bundle, out_dir, source)
    del bundle  # never hold the reference and the reloaded copy at once
    merged = load_bundle(out_dir, dtype=weights_dtype)
    report = compare_logits(
        reference,
        compute_logits(merged.model, ids),
        storage=dtype,
        names=("base+adapter", "merged"),
        prompt_source=prompt_source,
    )
    files = {"model": out_dir, "parity": report.write(RunDir(out_dir).parity_file)}
    files["manifest"] = _write_manifest(source, out_dir, dtype, report)
    log.debug(report.summary())  # the CLI prints it; INFO would repeat it
    result = MergeResult(out_dir, report, files)
    report.check()
    return result


def merge_into(bundle: Bundle, out_dir: Path, source: RunDir) -> Any:
    """Merge the bundle's active adapter in memory and save the plain model with tokenizer and
    template to `out_dir`; returns the merged model."""
    from instructune.models import merge_adapter

    if not bundle.adapters:
        raise ValueError(
            f"{source.path} has no adapter to merge (it is a full or merged model already); "
            "point at a LoRA training output_dir"
        )
    merged = merge_adapter(bundle.model)
    merged.save_pretrained(out_dir)
    bundle.tokenizer.save_pretrained(out_dir)
    RunDir(out_dir).write_template(bundle.template.source_text)
    return merged


UNMERGEABLE = {"PROMPT_TUNING": "prompt_tuning", "PREFIX_TUNING": "prefix_tuning"}


def check_mergeable(source: RunDir) -> None:
    """Refuse adapters that are no weight update: prompt and prefix tuning add virtual tokens."""
    if source.kind != "adapter":
        return
    saved = source.adapter_config()
    method = UNMERGEABLE.get(str(saved.get("peft_type")))
    if method is not None:
        raise ValueError(
            f"{source.path} is a method: {method} run: its virtual tokens are extra inputs, not "
            "a change of the base weights, so there is nothing to merge; serve the run folder "
            "itself (generate, chat, serve and eval load it)"
        )


def _fresh_output(source: RunDir, out: Path) -> Path:
    """`out`, checked: not the run itself, and empty or new (a merge never overwrites files)."""
    if source.kind != "adapter":
        what = "a model folder" if source.kind == "model" else "no adapter or model"
        raise FileNotFoundError(
            f"{source.path} holds {what}: merge needs a LoRA training output_dir "
            f"(with {ADAPTER_CONFIG_FILE})"
        )
    out = out.expanduser()
    if out.resolve() == source.path.resolve():
        raise ValueError(f"--out {out} is the run folder itself; choose a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_manifest(source: RunDir, out_dir: Path, dtype: str, report: ParityReport) -> Path:
    try:
        cfg = source.config()
    except ValueError:  # an edited config: the manifest still records where the merge came from
        cfg = None
    merge = {
        "run": str(source.path.resolve()),
        "base": source.base_model().path,
        "dtype": dtype,
        "method": cfg.method if cfg else None,
        # QLoRA trained against 4-bit weights; the merge adds the adapter to the dense originals.
        "base_weights": f"dense {dtype}",
        "parity": report.to_dict(),
    }
    return RunDir(out_dir).write_manifest(cfg, "merge", {"merge": merge})


__all__ = ["MergeResult", "merge_into", "run_merge"]
