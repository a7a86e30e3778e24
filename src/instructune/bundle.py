"""Loading what a run produced: `load_bundle` turns a training output_dir, a merged folder or any
model path into (model, tokenizer, template), which evaluation, the inference engine, `merge` and
`export` all load through. The run folder itself (its files, `RunDir`) is `instructune.rundir`.

torch, transformers and peft are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.config import ModelConfig
from instructune.config.methods import QuantizationConfig
from instructune.config.schema import Method
from instructune.rundir import ADAPTER_CONFIG_FILE, CONFIG_FILE, MODEL_CONFIG_FILE, RunDir

if TYPE_CHECKING:
    import torch

    from instructune.data.templates import Template


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
    run = RunDir(adapter_dir)
    if not run.adapter_config_file.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has no {ADAPTER_CONFIG_FILE}; point at a folder written by "
            "save_adapter (a training output_dir or its checkpoint-N folder)"
        )
    from instructune.models.identity import check_adapter_base
    from instructune.models.peft_setup import check_adapter_fits
    from instructune.noise import silence_known_noise

    run.adapter_config()  # peft's own error for a damaged one names no file
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
    "Bundle",
    "load_adapter",
    "load_base",
    "load_bundle",
    "load_run_template",
    "load_run_tokenizer",
    "resolve_adapter",
]
