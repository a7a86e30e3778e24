"""Make a loaded model trainable for a method (full, LoRA, QLoRA); save and merge adapters.

Gradient checkpointing is switched on here, not through `TrainingArguments`, so that its order
relative to PEFT wrapping is fixed: checkpointing and input-require-grads on the base model first,
then the adapters. The Trainer must then be given `gradient_checkpointing=False`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.config.methods import LoraConfig
from instructune.config.schema import Method
from instructune.models.peft_methods import ADAPTER_KEY_MARKERS
from instructune.rundir import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, RunDir

if TYPE_CHECKING:
    from instructune.config.schema import Config

logger = logging.getLogger(__name__)

# Reentrant checkpointing drops the grads of frozen inputs, and torch warns when it isn't chosen.
_CHECKPOINT_KWARGS = {"use_reentrant": False}


def apply_method(
    model: Any,
    method: Method,
    lora: LoraConfig,
    gradient_checkpointing: bool,
    sections: Config | None = None,
    tokenizer: Any = None,
) -> Any:
    """`full`: every parameter trains. `lora`/`qlora`: a PEFT model where only adapters train.
    `prompt_tuning`/`prefix_tuning`/`ia3`: their peft model, configured by `sections` (the run's
    config; its `prompt_tuning`, `prefix_tuning`, `ia3`) and `tokenizer` (for `init_text`)."""
    quantized = bool(getattr(model, "is_loaded_in_4bit", False))
    if method in ("prompt_tuning", "prefix_tuning", "ia3"):
        return _apply_other(model, method, gradient_checkpointing, sections, tokenizer)
    if method == "full":
        if quantized:
            raise ValueError("method: full can't train a 4-bit model; use method: qlora or lora")
        model.requires_grad_(True)
        if gradient_checkpointing:
            _enable_checkpointing(model)
        return model
    if method == "qlora" and not quantized:
        raise ValueError(
            "method: qlora needs the model loaded in 4-bit; load it with load_model(method='qlora')"
        )
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Checkpointing ourselves below: peft would call the deprecated transformers entry point.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    _check_targets(model, lora)
    if gradient_checkpointing:
        _enable_checkpointing(model)
    reward = sections is not None and sections.train.objective == "reward"
    model = _wrap_lora(model, lora, "SEQ_CLS" if reward else "CAUSAL_LM")
    trainable, total = model.get_nb_trainable_parameters()
    share = 100 * trainable / max(total, 1)
    logger.info("%s: %d of %d parameters train (%.3f%%)", method, trainable, total, share)
    return model


def _apply_other(
    model: Any, method: Method, checkpointing: bool, sections: Config | None, tokenizer: Any
) -> Any:
    from instructune.config.schema import Config
    from instructune.models import peft_methods

    cfg = sections if sections is not None else Config()
    if checkpointing:
        _enable_checkpointing(model)
    if method == "prompt_tuning":
        if cfg.prompt_tuning.init_text is not None and tokenizer is None:
            raise ValueError("prompt_tuning.init_text needs the tokenizer: pass tokenizer=")
        model = peft_methods.prompt_tuning_model(model, cfg.prompt_tuning, tokenizer)
    elif method == "prefix_tuning":
        model = peft_methods.prefix_tuning_model(model, cfg.prefix_tuning)
    else:
        model = peft_methods.ia3_model(model, cfg.ia3)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("%s: %d of %d parameters train", method, trainable, total)
    return model


def linear_module_names(model: Any) -> list[str]:
    """Distinct last name parts of the model's linear layers (what `target_modules` matches)."""
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and (isinstance(module, torch.nn.Linear) or _is_linear_like(module))
    }
    return sorted(names)


def save_adapter(model: Any, tokenizer: Any, template_text: str, out_dir: str | Path) -> Path:
    """Save the adapter weights (safetensors, nothing of the base), the tokenizer, the template."""
    run = RunDir(Path(out_dir))
    out = run.path
    out.mkdir(parents=True, exist_ok=True)
    # `auto` would also save embeddings whenever it guesses the vocabulary changed; resized
    # embeddings are saved through `lora.modules_to_save` instead.
    model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
    _check_adapter_only(run.adapter_weights_file, model)
    tokenizer.save_pretrained(out)
    run.write_template(template_text)
    return out


def check_adapter_weights(adapter_dir: Path) -> Path:
    """The adapter's weights file; a one-line error when the folder has none (peft would take the
    folder for a Hub id and complain about the repo id's form)."""
    weights = RunDir(adapter_dir).adapter_weights_file
    if not weights.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has {ADAPTER_CONFIG_FILE} but no {ADAPTER_WEIGHTS_FILE}: the adapter's "
            "weights are missing (an interrupted copy or save?); copy them in or retrain"
        )
    return weights


def check_adapter_fits(adapter_dir: Path, base_model: Any, base_name: str | None = None) -> None:
    """Raise a one-line error when the adapter's LoRA shapes don't fit `base_model`'s layers.

    Read from the safetensors header (no weights loaded), so an adapter trained on another base
    is refused before any evaluation rather than as a shape error deep inside peft.
    """
    weights = check_adapter_weights(adapter_dir)
    trained_on = _adapter_base_name(adapter_dir)
    here = base_name or getattr(base_model, "name_or_path", None) or type(base_model).__name__
    hidden = getattr(getattr(base_model, "config", None), "hidden_size", "?")
    shapes = adapter_shapes(weights)
    a_dims = [shape[1] for key, shape in shapes.items() if key.endswith("lora_A.weight")]
    a_hidden = max(set(a_dims), key=a_dims.count) if a_dims else "?"
    # a model that has adapters already: its layers are looked up under the peft wrapper
    plain = base_model.get_base_model() if hasattr(base_model, "get_base_model") else base_model
    for key, shape in shapes.items():
        problem = _lora_shape_problem(plain, key, shape)
        if problem:
            raise ValueError(
                f"adapter {adapter_dir} was trained on {trained_on} (hidden {a_hidden}), this "
                f"model is {here} (hidden {hidden}): {problem}; evaluate it on the base it was "
                "trained on (model.path)"
            )


def adapter_shapes(weights: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors header; an empty or cut-short file is named."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: handle.get_slice(key).get_shape() for key in handle.keys()}  # noqa: SIM118
    except SafetensorError as err:
        size = weights.stat().st_size
        raise ValueError(
            f"{weights} can't be read ({size} bytes: {err}); the file is empty or cut short "
            "(an interrupted copy or save?): copy it again or retrain"
        ) from None


def _adapter_base_name(adapter_dir: Path) -> str:
    import json

    try:
        path = RunDir(adapter_dir).adapter_config_file
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "an unknown base"
    return str(config.get("base_model_name_or_path") or "an unknown base")


_LORA_AXES = {".lora_A.weight": (1, "in_features"), ".lora_B.weight": (0, "out_features")}


def _lora_shape_problem(model: Any, key: str, shape: list[int]) -> str | None:
    """Why LoRA tensor `key` of `shape` can't attach to `model`, or None when it fits."""
    end = next((e for e in _LORA_AXES if key.endswith(e)), None)
    if end is None:
        return None  # biases, embeddings, modules_to_save: peft checks those itself
    axis, attr = _LORA_AXES[end]
    name = key[: -len(end)].removeprefix("base_model.model.")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return f"it adapts {name}, which {type(model).__name__} does not have"
    size = getattr(module, attr, None)
    if size is not None and size != shape[axis]:
        return f"{name} has {size} {attr.replace('_', ' ')} here, {shape[axis]} in the adapter"
    return None


def merge_adapter(model: Any) -> Any:
    """Fold the adapter into the base weights and return the plain model."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(
        getattr(model, "base_model", None), "is_loaded_in_4bit", False
    ):
        logger.warning(
            "merging into a 4-bit base re-quantizes the merged weights; for an exact merge, load "
            "the base in bfloat16/float32 (method: lora) and load the adapter onto it"
        )
    if not hasattr(model, "merge_and_unload"):
        raise TypeError(f"{type(model).__name__} has no adapter to merge; load one first")
    return model.merge_and_unload()


def _wrap_lora(model: Any, lora: LoraConfig, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    target = lora.target_modules
    if target == "all-linear" and lora.layers_to_transform is not None:
        # peft refuses layers_to_transform with a string target: spell all-linear out as peft does.
        target = _all_linear_names(model)
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=lora.dropout,
        target_modules=target,
        layers_to_transform=lora.layers_to_transform,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        bias=lora.bias,
        modules_to_save=lora.modules_to_save,
        task_type=task_type,  # SEQ_CLS also trains (and saves) a reward model's new head
    )
    return get_peft_model(model, peft_config)


def _check_targets(model: Any, lora: LoraConfig) -> None:
    """Name every target module the model lacks (peft would only say that none matched)."""
    if lora.target_modules == "all-linear":
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [
        target
        for target in lora.target_modules
        if not any(name == target or name.endswith("." + target) for name in names)
    ]
    if missing:
        raise ValueError(
            f"lora.target_modules {missing} don't exist in {type(model).__name__}; its linear "
            f"modules are {linear_module_names(model)} (or use target_modules: all-linear)"
        )


def _all_linear_names(model: Any) -> list[str]:
    output = model.get_output_embeddings()
    head = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if mod is output}
    return [name for name in linear_module_names(model) if name not in head]


def _enable_checkpointing(model: Any) -> None:
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=_CHECKPOINT_KWARGS)
    # Frozen embeddings give checkpointed blocks inputs without grad, so no grad reaches the
    # adapters; transformers adds this hook only for models whose input is `input_ids`.
    if model.main_input_name != "input_ids":
        model.enable_input_require_grads()
    model.config.use_cache = False


def _is_linear_like(module: Any) -> bool:
    # bitsandbytes Linear4bit/Linear8bitLt subclass nn.Linear; GPT-2 style models use Conv1D.
    return type(module).__name__ in {"Conv1D", "Linear4bit", "Linear8bitLt"}


def _check_adapter_only(weights: Path, model: Any) -> None:
    from safetensors import safe_open

    config = model.peft_config[model.active_adapter]
    saved = set(getattr(config, "modules_to_save", None) or [])
    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    stray = [
        key
        for key in keys
        if not any(marker in key for marker in ADAPTER_KEY_MARKERS)
        and not any(f".{name}." in f".{key}" for name in saved)
        and not (getattr(config, "bias", "none") != "none" and key.endswith(".bias"))
    ]
    if stray:
        raise RuntimeError(
            f"{weights} holds base-model weights {stray[:5]} ({len(stray)} in all); this is a bug "
            "in instructune, please report it with your lora: config"
        )
