"""`TrainConfig` → `transformers.TrainingArguments`: every knob mapped here, in one place.

What is deliberately *not* handed to the Trainer:
- label smoothing: our loss applies it on the trained positions (the Trainer's `LabelSmoother`
  would need full logits);
- gradient checkpointing: `models.apply_method` switches it on before PEFT wraps the model;
- tensorboard: we attach its callback with a writer under `output_dir/tensorboard` instead of the
  Trainer's default folder inside the checkpoints.

Mixed precision: on CPU the weights' dtype (`models.resolve_dtype`) is the compute dtype and the
Trainer's autocast stays off. Where bf16 is emulated (no AVX512-BF16/AMX) it runs ~4-10x slower
than float32, so `auto` picks float32 there; where bf16 is native, bf16 weights are used
directly. Adapter parameters stay float32 masters; `models.logprobs.adapter_autocast` runs
their matmuls in the weights' half dtype around the model's forward, on CPU and CUDA alike.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.config import Config, ConfigError, TrainConfig

if TYPE_CHECKING:
    import torch
    from transformers import TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)

# Our optimizer names → `TrainingArguments.optim`. All of these construct and step on CPU with
# bitsandbytes 0.50 (tests/training/test_optimizers.py); the paged ones fall back to unpaged
# state on CPU (bitsandbytes warns), which is only a memory, not a correctness, difference.
OPTIMIZERS: dict[str, str] = {
    "adamw_torch": "adamw_torch",
    "adafactor": "adafactor",
    "sgd": "sgd",
    "adamw_bnb_8bit": "adamw_bnb_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "lion": "lion_32bit",
}
SCHEDULERS: dict[str, str] = {
    "constant": "constant",
    "constant_with_warmup": "constant_with_warmup",
    "cosine": "cosine",
    "cosine_with_restarts": "cosine_with_restarts",
    "linear": "linear",
}
_BNB_OPTIMIZERS = {"adamw_bnb_8bit", "paged_adamw_32bit", "paged_adamw_8bit", "lion"}


def build_training_args(
    cfg: Config,
    checkpoints_dir: Path,
    dtype: torch.dtype,
    *,
    packed: bool,
    has_eval: bool,
) -> TrainingArguments:
    """The Trainer's arguments for `cfg.train`; ConfigError for combinations that can't run."""
    from transformers import TrainingArguments

    train = cfg.train
    return TrainingArguments(
        **shared_kwargs(cfg, checkpoints_dir, dtype, has_eval),
        per_device_eval_batch_size=train.micro_batch_size,
        auto_find_batch_size=train.auto_find_batch_size,
        neftune_noise_alpha=train.neftune_noise_alpha,
        train_sampling_strategy=_sampling(train, packed),
        # The trainer subclass computes the loss and counts targets itself (trainer.py).
        label_smoothing_factor=0.0,
        average_tokens_across_devices=True,
        activation_checkpointing=False,
        prediction_loss_only=True,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=True,  # our ProgressCallback draws the bar
        # Only adapters (or all weights) train and every one of them is used in each forward.
        ddp_find_unused_parameters=False,
    )


def shared_kwargs(
    cfg: Config, checkpoints_dir: Path, dtype: torch.dtype, has_eval: bool
) -> dict[str, Any]:
    """The `TrainingArguments` keywords every objective's Trainer takes from `cfg.train` (TRL's
    GRPOConfig is a TrainingArguments too), after `check_train_config`."""
    train = cfg.train
    check_train_config(cfg, dtype)
    return {
        "output_dir": str(checkpoints_dir),
        "run_name": cfg.output_path.name,
        "seed": train.seed,
        "data_seed": train.seed,
        "per_device_train_batch_size": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps or -1,
        **optimizer_kwargs(train),
        **scheduler_kwargs(train),
        "max_grad_norm": train.max_grad_norm or 0.0,
        **precision_kwargs(dtype),
        **schedule_kwargs(train, has_eval),
        "report_to": trainer_report_to(train.report_to) or "none",
        # Without a GPU, say so: it is what makes a torchrun launch on CPU set up DDP (gloo);
        # otherwise accelerate sees no device to distribute over and each process runs alone.
        "use_cpu": not _cuda(),
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": _cuda(),
    }


def check_train_config(cfg: Config, dtype: torch.dtype) -> None:
    """Reject what would fail later inside the Trainer, naming the key and the fix."""
    import torch

    train = cfg.train
    if train.optimizer in _BNB_OPTIMIZERS and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"train.optimizer {train.optimizer!r} needs bitsandbytes: pip install bitsandbytes"
        )
    if dtype == torch.float16 and cfg.method == "full":
        raise ConfigError(
            "method: full with float16 weights can't train (gradient scaling needs float32 "
            "master weights); set train.precision: bf16 or fp32"
        )
    if dtype == torch.float16 and not _cuda():
        raise ConfigError("train.precision fp16 needs a CUDA GPU; use bf16, fp32 or auto on CPU")
    if train.lr_scheduler == "constant" and (train.warmup_ratio > 0 or train.warmup_steps):
        logger.warning(
            "train.lr_scheduler constant ignores warmup; use constant_with_warmup to warm up"
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not _cuda():
        logger.warning(
            "FSDP was requested but there is no GPU: accelerate runs FSDP only on accelerators, "
            "so this run is plain DDP with every weight on every process (docs/multi-gpu.md)"
        )
    for target in train.report_to:
        if target in ("wandb", "mlflow") and importlib.util.find_spec(target) is None:
            raise ConfigError(
                f"train.report_to lists {target!r} but {target} is not installed: "
                f"pip install {target} (or remove it from train.report_to)"
            )


def optimizer_kwargs(train: TrainConfig) -> dict[str, Any]:
    return {
        "optim": OPTIMIZERS[train.optimizer],
        "learning_rate": train.learning_rate,
        "weight_decay": train.weight_decay,
        "adam_beta1": train.adam_beta1,
        "adam_beta2": train.adam_beta2,
        "adam_epsilon": train.adam_epsilon,
    }


def scheduler_kwargs(train: TrainConfig) -> dict[str, Any]:
    # transformers 5.x dropped `warmup_ratio`: a float in (0, 1) for warmup_steps is the ratio.
    warmup: float = train.warmup_steps if train.warmup_steps is not None else train.warmup_ratio
    kwargs: dict[str, Any] = {
        "lr_scheduler_type": SCHEDULERS[train.lr_scheduler],
        "warmup_steps": warmup,
    }
    if train.lr_scheduler == "cosine_with_restarts":
        kwargs["lr_scheduler_kwargs"] = {"num_cycles": train.lr_cycles}
    return kwargs


def schedule_kwargs(train: TrainConfig, has_eval: bool) -> dict[str, Any]:
    """When to log, evaluate and checkpoint (no save_steps: no intermediate checkpoints)."""
    evaluate = has_eval and train.eval_steps is not None
    return {
        "logging_strategy": "steps",
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": train.eval_steps if evaluate else None,
        "save_strategy": "steps" if train.save_steps else "no",
        "save_steps": train.save_steps or 500,
        "save_total_limit": train.save_total_limit,
    }


def precision_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """Autocast flags: CUDA only (see the module docstring for why CPU runs without autocast)."""
    import torch

    if not _cuda():
        return {"bf16": False, "fp16": False}
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def trainer_report_to(targets: Sequence[str]) -> list[str]:
    """Integrations the Trainer itself starts (tensorboard is attached by `report_callbacks`)."""
    return [t for t in targets if t in ("wandb", "mlflow")]


def report_callbacks(targets: Sequence[str], out_dir: Path) -> list[TrainerCallback]:
    """Set up the report targets' local stores under `out_dir`; the callbacks we attach ourselves.

    wandb runs offline and mlflow writes a local file store unless the user's environment already
    chose otherwise (WANDB_MODE, MLFLOW_TRACKING_URI are left alone when set).
    """
    callbacks: list[TrainerCallback] = []
    if "wandb" in targets:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(out_dir))
    if "mlflow" in targets and "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = (out_dir / "mlruns").resolve().as_uri()
        # mlflow 3 refuses its file store (in "maintenance mode") unless allowed; a database
        # backend needs the full mlflow package, and a local folder is what a run dir wants
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if "tensorboard" in targets:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(out_dir / "tensorboard"))))
    return callbacks


def _sampling(train: TrainConfig, packed: bool) -> str:
    if train.group_by_length and packed:
        # Packed rows are all ~max_length long: there is no padding for grouping to save.
        logger.info("train.group_by_length has no effect on packed data (data.packing: true)")
    return "group_by_length" if train.group_by_length and not packed else "random"


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
