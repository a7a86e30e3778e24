"""`RunDir`: where each file of a run folder lives, reading it and writing it.

Every command that writes into an output folder goes through `RunDir` (the manifest first, then
its own files); evaluation, the inference engine, `merge` and `export` read runs through it.
Loading the model a run produced is `instructune.bundle`'s job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from instructune.config import Config, ModelConfig, dump_config
from instructune.redact import redact_secrets
from instructune.rundir import names
from instructune.rundir.manifest import MetricsLog, manifest_text

RunKind = Literal["adapter", "model", "none"]


class _Named:
    """A `RunDir` attribute that is the path of one named file (or folder) in it; `owners`: a
    checkpoint folder without the file has its run's (`RunDir.owner`)."""

    def __init__(self, name: str, *, owners: bool = False) -> None:
        self.name = name
        self.owners = owners

    @overload
    def __get__(self, run: None, kind: type[RunDir]) -> _Named: ...

    @overload
    def __get__(self, run: RunDir, kind: type[RunDir]) -> Path: ...

    def __get__(self, run: RunDir | None, kind: type[RunDir]) -> Path | _Named:
        if run is None:
            return self
        here = run.path / self.name
        owner = run.owner if self.owners else None
        return owner.path / self.name if owner is not None and not here.is_file() else here


@dataclass(frozen=True)
class RunDir:
    """A command's output folder (a training run, a merged or checkpoint folder, a prepare, eval
    or build folder): where each of its files lives, and the one way to write them."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    config_file = _Named(names.CONFIG_FILE, owners=True)
    template_file = _Named(names.TEMPLATE_FILE, owners=True)
    manifest_file = _Named(names.MANIFEST_FILE)
    metrics_file = _Named(names.METRICS_FILE)
    checkpoints_dir = _Named(names.CHECKPOINTS_DIR)
    results_file = _Named(names.RESULTS_FILE)
    plot_file = _Named(names.PLOT_FILE)
    adapter_config_file = _Named(names.ADAPTER_CONFIG_FILE)
    adapter_weights_file = _Named(names.ADAPTER_WEIGHTS_FILE)
    model_config_file = _Named(names.MODEL_CONFIG_FILE)
    tokenizer_config_file = _Named(names.TOKENIZER_CONFIG_FILE)
    run_info_file = _Named(names.RUN_INFO_FILE)
    counts_file = _Named(names.COUNTS_FILE)
    parity_file = _Named(names.PARITY_FILE)
    summary_file = _Named(names.SUMMARY_FILE)
    train_file = _Named(names.TRAIN_FILE)
    eval_file = _Named(names.EVAL_FILE)
    build_report_file = _Named(names.BUILD_REPORT_FILE)
    build_report_md = _Named(names.BUILD_REPORT_MD)
    eval_metrics_file = _Named(names.EVAL_METRICS_FILE)
    predictions_file = _Named(names.PREDICTIONS_FILE)
    report_file = _Named(names.EVAL_REPORT_FILE)
    report_md = _Named(names.EVAL_REPORT_MD)
    synth_rows_file = _Named(names.SYNTH_ROWS_FILE)
    synth_cache_file = _Named(names.SYNTH_CACHE_FILE)
    synth_report_file = _Named(names.SYNTH_REPORT_FILE)
    synth_report_md = _Named(names.SYNTH_REPORT_MD)

    @property
    def prepared(self) -> RunDir:
        """`prepared/`: what `prepare` writes besides the manifest (summary, `--dump` rows)."""
        return RunDir(self.path / names.PREPARED_DIR)

    @property
    def owner(self) -> RunDir | None:
        """The run a `checkpoints/checkpoint-N` folder belongs to: its config and template are
        there (the Trainer saves only weights and tokenizer into a checkpoint)."""
        parent, name = self.path.parent, self.path.name
        if parent.name == names.CHECKPOINTS_DIR and name.startswith(names.CHECKPOINT_PREFIX):
            return RunDir(parent.parent)
        return None

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{names.CHECKPOINT_PREFIX}{step}"

    def split_file(self, split: str) -> Path:
        """`prepared/`'s dumped examples of `split` (`prepare --dump`)."""
        return self.path / names.SPLIT_FILE.format(split=split)

    def reliability_file(self, task_slug: str) -> Path:
        """An eval folder's reliability diagram of one task (`task_slug`: its file-safe name)."""
        return self.path / names.RELIABILITY_FILE.format(task=task_slug)

    def bins_file(self, split: str) -> Path:
        """`prepared/`'s packed rows of `split` (`prepare --dump` with packing)."""
        return self.path / names.BINS_FILE.format(split=split)

    # ------------------------------------------------------------------------------- reading

    @property
    def kind(self) -> RunKind:
        """`adapter` (a LoRA run), `model` (a full or merged model folder), or `none`."""
        if self.adapter_config_file.is_file():
            return "adapter"
        if self.model_config_file.is_file():
            return "model"
        return "none"

    def adapter_config(self) -> dict[str, Any]:
        """The parsed `adapter_config.json`; a one-line error naming the file when it is not a
        peft adapter config (cut short by a copy, edited by hand)."""
        path = self.adapter_config_file
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); the adapter folder is damaged: copy it again "
                "or retrain"
            ) from None
        if not isinstance(saved, dict) or "peft_type" not in saved:
            raise ValueError(
                f"{path} is not a peft adapter config (no peft_type); the adapter folder is "
                "damaged: copy it again or retrain"
            )
        return saved

    def manifest(self) -> dict[str, Any] | None:
        """The run's parsed manifest (a checkpoint folder reads its run's); None when there is
        none or it can't be read."""
        path = self.manifest_file
        if not path.is_file() and self.owner is not None:
            path = self.owner.manifest_file
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer_config_file.is_file()

    def config(self) -> Config | None:
        """The resolved config the run was trained with, None when the folder has none."""
        if not self.config_file.is_file():
            return None
        from instructune.config import load_config

        return load_config(self.config_file)

    def base_model(self) -> ModelConfig:
        """The model the run trained on: its config.yaml's `model`, else the adapter's base."""
        cfg = self.config()
        if cfg is not None:
            return cfg.model
        if self.kind == "adapter":
            base = self.adapter_config().get("base_model_name_or_path")
            if base:
                return ModelConfig(path=str(base))
            raise ValueError(
                f"{self.adapter_config_file} names no base_model_name_or_path and {self.path} has "
                f"no {names.CONFIG_FILE}: can't tell which model the adapter belongs to"
            )
        return ModelConfig(path=str(self.path))

    def template_text(self) -> str | None:
        """The exact template training rendered with, None when the folder has none."""
        if not self.template_file.is_file():
            return None
        with open(self.template_file, encoding="utf-8", newline="") as handle:
            return handle.read()

    # ------------------------------------------------------------------------------- writing

    def write_manifest(self, cfg: Config | None, command: str, extra: dict[str, Any]) -> Path:
        """Write `config.yaml` (resolved; when there is a config) and `manifest.json`; returns the
        manifest path. Commands that act on a run (`merge`, `export`) pass its config, or None.

        The manifest comes first and is replaced atomically: it is what marks the folder as
        written by instructune (`claim_output_dir`), so a crash never leaves our files without
        it."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.manifest_file
        partial = path.with_name(f".{names.MANIFEST_FILE}.tmp")
        partial.write_text(manifest_text(cfg, command, extra) + "\n", encoding="utf-8")
        os.replace(partial, path)
        if cfg is not None:
            # a credential in a URL (synthesize.backend.base_url) is never written
            text = redact_secrets(dump_config(cfg))
            (self.path / names.CONFIG_FILE).write_text(text, encoding="utf-8")
        return path

    def metrics_log(self) -> MetricsLog:
        """The append-only `metrics.jsonl` training logs to."""
        return MetricsLog(self.metrics_file)

    def write_template(self, text: str) -> Path:
        """Save the template byte for byte (newline="": it is compared against at load time)."""
        path = self.path / names.TEMPLATE_FILE
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return path

    def write_results(self, metrics: dict[str, Any]) -> Path:
        """`train_results.json`: the finished run's metrics."""
        return write_json(self.results_file, metrics)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """`summary.json` (of `prepared/`), creating the folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        return write_json(self.summary_file, summary)


def write_json(path: Path, data: Any, **dumps: Any) -> Path:
    """`data` as indented JSON (`dumps`: more `json.dumps` options) with a final newline."""
    path.write_text(json.dumps(data, indent=2, **dumps) + "\n", encoding="utf-8")
    return path


__all__ = ["RunDir", "RunKind", "write_json"]
