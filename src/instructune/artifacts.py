"""The run directory: its file names (one home) and loading what a run produced.

A training `output_dir` holds `config.yaml` + `manifest.json`, `metrics.jsonl`,
`training_curves.png`, `train_results.json`, the adapter (`adapter_config.json` +
`adapter_model.safetensors`) or the full model (`config.json` + weights), the tokenizer files,
`template.jinja` and `checkpoints/checkpoint-N/`. `RunDir` names those paths; `load_bundle` turns a
run, a merged folder or any model path into (model, tokenizer, template), which evaluation, the
inference engine, `merge` and `export` all load through.

torch, transformers and peft are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from instructune.config import Config, ModelConfig
from instructune.config.schema import Method, QuantizationConfig

if TYPE_CHECKING:
    import torch

    from instructune.data.templates import Template

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
TEMPLATE_FILE = "template.jinja"
CHECKPOINTS_DIR = "checkpoints"
RESULTS_FILE = "train_results.json"
PLOT_FILE = "training_curves.png"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
MODEL_CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

RunKind = Literal["adapter", "model", "none"]


@dataclass(frozen=True)
class RunDir:
    """A training output_dir (or a merged / checkpoint folder): where each of its files lives."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @property
    def owner(self) -> RunDir | None:
        """The run a `checkpoints/checkpoint-N` folder belongs to: its config and template are
        there (the Trainer saves only weights and tokenizer into a checkpoint)."""
        if self.path.parent.name == CHECKPOINTS_DIR and self.path.name.startswith("checkpoint-"):
            return RunDir(self.path.parent.parent)
        return None

    def _own_or_owners(self, name: str) -> Path:
        here = self.path / name
        owner = self.owner
        return owner.path / name if owner is not None and not here.is_file() else here

    @property
    def config_file(self) -> Path:
        return self._own_or_owners(CONFIG_FILE)

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def template_file(self) -> Path:
        return self._own_or_owners(TEMPLATE_FILE)

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def plot_file(self) -> Path:
        return self.path / PLOT_FILE

    @property
    def adapter_config_file(self) -> Path:
        return self.path / ADAPTER_CONFIG_FILE

    @property
    def adapter_weights_file(self) -> Path:
        return self.path / ADAPTER_WEIGHTS_FILE

    @property
    def kind(self) -> RunKind:
        """`adapter` (a LoRA run), `model` (a full or merged model folder), or `none`."""
        if self.adapter_config_file.is_file():
            return "adapter"
        if (self.path / MODEL_CONFIG_FILE).is_file():
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

    @property
    def has_tokenizer(self) -> bool:
        return (self.path / TOKENIZER_CONFIG_FILE).is_file()

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
                f"no {CONFIG_FILE}: can't tell which model the adapter belongs to"
            )
        return ModelConfig(path=str(self.path))

    def template_text(self) -> str | None:
        """The exact template training rendered with, None when the folder has none."""
        if not self.template_file.is_file():
            return None
        with open(self.template_file, encoding="utf-8", newline="") as handle:
            return handle.read()


def write_template(folder: Path, text: str) -> Path:
    """Save the template byte for byte (newline="": it is compared against at load time)."""
    path = Path(folder) / TEMPLATE_FILE
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return path


@dataclass
class Bundle:
    """A loaded model with the tokenizer and template it is prompted with."""

    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    template: Template = field(repr=False)
    name: str
    """What to call the model (the run folder's name, or the model path)."""
    adapters: list[str] = field(default_factory=list)
    """peft adapter names loaded on `model`, the first one active; empty for a plain model."""


def load_bundle(
    path: str | Path,
    *,
    adapters: Sequence[str | Path] = (),
    dtype: torch.dtype | None = None,
    template: str | None = None,
) -> Bundle:
    """Load a training output_dir, a merged folder or any `model.path` for inference.

    A LoRA run loads its base (from its config.yaml) with the adapter attached; `adapters` are
    further LoRA runs on the same base, attached under their folder names (switch with
    `model.set_adapter(name)`). The run's saved tokenizer and `template.jinja` win; otherwise the
    model's tokenizer and `template` (default `chat`). Eval mode, float32 on CPU unless `dtype`.
    """
    run = RunDir(Path(path))
    model_cfg, runs = _what_to_load(str(path), run, adapters)
    for adapter_run in runs:  # a damaged adapter fails in a second, before the base loads
        _check_readable(adapter_run)
    model = load_base(model_cfg, dtype)
    names: list[str] = []
    for adapter_run in runs:
        name = adapter_run.path.resolve().name
        if name in names:
            raise ValueError(f"two adapters are named {name!r}; rename one of the run folders")
        model = load_adapter(model, adapter_run.path, name=name)
        names.append(name)
    if names:
        model.set_adapter(names[0])
    model.eval()
    owner = run if run.path.is_dir() else None
    tokenizer = load_run_tokenizer(owner, model_cfg)
    chosen = load_run_template(owner, tokenizer, template or "chat")
    label = run.path.resolve().name if owner is not None else str(path)
    return Bundle(model, tokenizer, chosen, label, names)


def _check_readable(run: RunDir) -> None:
    from instructune.models.peft_setup import adapter_shapes, check_adapter_weights

    run.adapter_config()
    adapter_shapes(check_adapter_weights(run.path))


def _what_to_load(
    path: str, run: RunDir, adapters: Sequence[str | Path]
) -> tuple[ModelConfig, list[RunDir]]:
    """The base model to load and the adapter runs to attach to it, in order."""
    extra = [RunDir(Path(a)) for a in adapters]
    for other in extra:
        if other.kind != "adapter":
            raise FileNotFoundError(
                f"adapter {str(other.path)!r} has no {ADAPTER_CONFIG_FILE}; point at a LoRA "
                "training output_dir"
            )
    if not run.path.is_dir():
        return ModelConfig(path=path), extra
    kind = run.kind
    if kind == "adapter":
        return run.base_model(), [run, *extra]
    if kind == "model":
        return ModelConfig(path=str(run.path)), extra
    if run.config_file.is_file():
        raise FileNotFoundError(
            f"{path} is a run folder without weights: it has {CONFIG_FILE} but neither "
            f"{ADAPTER_CONFIG_FILE} nor {MODEL_CONFIG_FILE} (did training finish?)"
        )
    # Anything else (a folder of .gguf files) is for `model.path` resolution to judge.
    return ModelConfig(path=path), extra


def resolve_adapter(adapter: str | None) -> tuple[Path | None, str | None]:
    """(folder, "peft" | "merged") for an eval `adapter:`, (None, None) without one."""
    if adapter is None:
        return None, None
    run = RunDir(Path(adapter))
    if not run.path.is_dir():
        raise FileNotFoundError(f"adapter {adapter!r} is not a folder (a training output_dir)")
    kind = run.kind
    if kind == "adapter":
        from instructune.models.peft_setup import check_adapter_weights

        check_adapter_weights(run.path)
        return run.path, "peft"
    if kind == "model":
        return run.path, "merged"
    raise FileNotFoundError(
        f"adapter {adapter!r} has neither {ADAPTER_CONFIG_FILE} (a LoRA adapter) nor "
        f"{MODEL_CONFIG_FILE} (a merged or fully fine-tuned model)"
    )


def load_base(
    model_cfg: ModelConfig,
    dtype: torch.dtype | None = None,
    method: Method = "full",
    quantization: QuantizationConfig | None = None,
    reward_head: bool = False,
) -> Any:
    """`model_cfg`'s model for inference: dense in `dtype` (default float32 on CPU, else bf16 when
    native), or 4-bit for `method: qlora` (evaluation measures the model training saw);
    `reward_head`: with a reward model's one-output head (`train.objective: reward` runs)."""
    from instructune.models import load_model, resolve_dtype

    if dtype is None:
        dtype = resolve_dtype("auto", model_cfg.dtype, for_training=False)
    # lora differs from full only in what trains: both load the dense model.
    dense: Method = "qlora" if method == "qlora" else "full"
    return load_model(
        model_cfg, dtype, dense, quantization, for_training=False, reward_head=reward_head
    )


def load_adapter(
    base_model: Any, adapter_dir: str | Path, is_trainable: bool = False, name: str | None = None
) -> Any:
    """Attach the adapter saved in `adapter_dir` to `base_model` (a second one joins the first)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has no {ADAPTER_CONFIG_FILE}; point at a folder written by "
            "save_adapter (a training output_dir or its checkpoint-N folder)"
        )
    from instructune.models.identity import check_adapter_base
    from instructune.models.peft_setup import check_adapter_fits
    from instructune.noise import silence_known_noise

    RunDir(adapter_dir).adapter_config()  # peft's own error for a damaged one names no file
    check_adapter_fits(adapter_dir, base_model)
    check_adapter_base(adapter_dir, base_model)  # same shape, but the base it was trained on?
    silence_known_noise()  # peft's adapter-name warning, harmless here (noise.py says why)
    if isinstance(base_model, PeftModel):
        base_model.load_adapter(
            str(adapter_dir), adapter_name=name or adapter_dir.name, is_trainable=is_trainable
        )
        return base_model
    return PeftModel.from_pretrained(
        base_model, str(adapter_dir), adapter_name=name or "default", is_trainable=is_trainable
    )


def load_run_tokenizer(run: RunDir | None, model_cfg: ModelConfig) -> Any:
    """Training saves the tokenizer it used (pad token included): prefer it to the model's."""
    if run is not None and run.has_tokenizer:
        from transformers import AutoTokenizer

        from instructune.models import prepare_tokenizer

        return prepare_tokenizer(AutoTokenizer.from_pretrained(str(run.path)), str(run.path))
    from instructune.models import load_tokenizer

    return load_tokenizer(model_cfg)


def load_run_template(run: RunDir | None, tokenizer: Any, default: str = "chat") -> Template:
    """The run's saved `template.jinja` (byte-identical prompts), else the `default` spec."""
    from instructune.data.templates import compile_template, load_template

    text = run.template_text() if run is not None else None
    if text is not None and run is not None:
        return compile_template(str(run.template_file), text, tokenizer)
    return load_template(default, tokenizer)


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "RESULTS_FILE",
    "TEMPLATE_FILE",
    "Bundle",
    "RunDir",
    "load_adapter",
    "load_base",
    "load_bundle",
    "load_run_template",
    "load_run_tokenizer",
    "resolve_adapter",
    "write_template",
]
