"""`run_prepare(cfg)`: the public API behind `instructune prepare`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructune.config import Config, ConfigError
from instructune.data.audit import render_example
from instructune.data.pipeline import PreparedData, prepare_dataset
from instructune.data.report import summary_dict, summary_text
from instructune.rundir import RunDir, claim_output_dir, data_inputs


@dataclass
class PrepareResult:
    prepared: PreparedData
    summary: dict[str, Any]
    text: str
    out_dir: Path


def run_prepare(cfg: Config, dump: bool = False, tokenizer: Any = None) -> PrepareResult:
    """Prepare `cfg.data`, write summary/lineage (and the tokenized examples with `dump`)."""
    if cfg.data is None:
        raise ConfigError("prepare needs a `data:` section")
    claim_output_dir(cfg.output_path, command="prepare", inputs=data_inputs(cfg.data))
    if tokenizer is None:
        from instructune.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_dataset(cfg.data, tokenizer)
    run = RunDir(cfg.output_path)
    run.write_manifest(  # first: it marks output_dir as ours
        cfg,
        "prepare",
        {"data_hashes": prepared.hashes, "inputs": {s.path: s.sha256 for s in prepared.sources}},
    )
    out_dir = run.prepared.path
    summary = summary_dict(prepared)
    run.prepared.write_summary(summary)
    if dump:
        dump_examples(prepared, out_dir)
    parts = [summary_text(prepared, cfg.data.max_length)]
    for example in prepared.train[: cfg.data.show_examples]:
        parts.append(f"== Example {example.source} (trained spans in [[ ]]) ==")
        parts.append(render_example(example, tokenizer))
    return PrepareResult(prepared, summary, "\n".join(parts), out_dir)


def dump_examples(prepared: PreparedData, out_dir: Path) -> None:
    """One JSON row per tokenized example (before packing): aligned, unshifted input_ids/labels,
    and `cut` (tokens truncation removed from its start) when it was truncated; with packing,
    the packed rows as lists of those examples (`rundir.BINS_FILE`)."""
    splits = (
        ("train", prepared.train, prepared.train_packed),
        ("eval", prepared.eval, prepared.eval_packed),
    )
    folder = RunDir(out_dir)
    for split, examples, packed in splits:
        if not examples:
            continue
        if packed is not None:
            with folder.bins_file(split).open("w", encoding="utf-8") as fh:
                for packed_row in packed:
                    fh.write(json.dumps({"examples": packed_row.indices.tolist()}) + "\n")
        with folder.split_file(split).open("w", encoding="utf-8") as fh:
            for e in examples:
                row = {"source": e.source, "input_ids": e.input_ids.tolist()}
                row["labels"] = e.labels.tolist()
                if e.cut:
                    row["cut"] = int(e.cut)
                fh.write(json.dumps(row) + "\n")
